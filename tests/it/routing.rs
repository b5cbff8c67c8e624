//! Every template form and binding kind, through the real gateway to a real backend: which
//! gRPC method is called and with which request message.

use crate::support::*;
use bytes::Bytes;
use protogate::server::Settings;
use serde_json::json;

struct Fixture {
    backend: Backend,
    gw: Gw,
    pool: prost_reflect::DescriptorPool,
}

async fn fixture_with(reply: Bytes) -> Fixture {
    let pool = library_pool();
    let backend = Backend::start(reply_with(reply)).await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;
    Fixture { backend, gw, pool }
}

async fn fixture() -> Fixture {
    fixture_with(Bytes::new()).await
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.gw.base, path)
    }

    /// The one call the backend received: its method path and its message as JSON.
    fn received(&self, type_name: &str) -> (String, serde_json::Value) {
        let call = self.backend.only_call();
        (
            call.path.clone(),
            decode_json(&self.pool, type_name, &call.message),
        )
    }
}

const GET_REQ: &str = "testapi.v1.GetBookRequest";
const LIST_REQ: &str = "testapi.v1.ListBooksRequest";

#[tokio::test]
async fn multi_segment_variable_keeps_reserved_escapes() {
    let f = fixture().await;
    let resp = get(&f.url("/v1/shelves/s%201/books/b%2F2")).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let (path, msg) = f.received(GET_REQ);
    assert_eq!(path, "/testapi.v1.Library/GetBook");
    assert_eq!(msg, json!({"name": "shelves/s 1/books/b%2F2"}));
}

#[tokio::test]
async fn additional_binding_and_single_segment_full_decoding() {
    let f = fixture().await;
    let resp = get(&f.url("/v2/books/a%2Fb%20c")).await;
    assert_eq!(resp.status, 200);
    let (path, msg) = f.received(GET_REQ);
    assert_eq!(path, "/testapi.v1.Library/GetBook");
    assert_eq!(msg, json!({"name": "a/b c"}));
}

#[tokio::test]
async fn verb_after_double_wildcard() {
    let f = fixture().await;
    let resp = send("POST", &f.url("/v1/a/b/c:undelete"), &[], "").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let (path, msg) = f.received(GET_REQ);
    assert_eq!(path, "/testapi.v1.Library/UndeleteBook");
    assert_eq!(msg, json!({"name": "a/b/c"}));
}

#[tokio::test]
async fn double_wildcard_matches_many_segments() {
    let f = fixture().await;
    assert_eq!(get(&f.url("/v1/files/x/y/z.txt")).await.status, 200);
    let (path, msg) = f.received(GET_REQ);
    assert_eq!(path, "/testapi.v1.Library/GetFile");
    assert_eq!(msg, json!({"name": "x/y/z.txt"}));
}

#[tokio::test]
async fn verb_route_and_plain_route_side_by_side() {
    let f = fixture().await;
    assert_eq!(
        send("POST", &f.url("/v1/things/t1:cancel"), &[], "")
            .await
            .status,
        200
    );
    assert_eq!(get(&f.url("/v1/things/t2")).await.status, 200);
    // The verb's path under another method is 405, not `{name}` holding "t3:cancel".
    let other = get(&f.url("/v1/things/t3:cancel")).await;
    assert_eq!(other.status, 405);
    assert_eq!(other.headers["allow"], "POST");
    let calls = f.backend.calls();
    assert_eq!(calls[0].path, "/testapi.v1.Library/CancelThing");
    assert_eq!(
        decode_json(&f.pool, GET_REQ, &calls[0].message),
        json!({"name": "t1"})
    );
    assert_eq!(calls[1].path, "/testapi.v1.Library/GetThing");
    assert_eq!(
        decode_json(&f.pool, GET_REQ, &calls[1].message),
        json!({"name": "t2"})
    );
}

#[tokio::test]
async fn custom_method_and_any_method() {
    let f = fixture().await;
    let resp = send(
        "SEARCH",
        &f.url("/v1/books:search"),
        &[],
        r#"{"pageSize": 3}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    for method in ["GET", "DELETE", "OPTIONS"] {
        assert_eq!(
            send(method, &f.url("/v1/any/n1"), &[], "").await.status,
            200,
            "{method}"
        );
    }
    let calls = f.backend.calls();
    assert_eq!(calls[0].path, "/testapi.v1.Library/SearchBooks");
    assert_eq!(
        decode_json(&f.pool, LIST_REQ, &calls[0].message),
        json!({"page_size": 3})
    );
    assert!(calls[1..]
        .iter()
        .all(|c| c.path == "/testapi.v1.Library/AnyMethod"));
}

#[tokio::test]
async fn body_field_with_path_variable() {
    let f = fixture().await;
    let body = json!({"title": "Dune", "pageCount": "412", "kind": "NOVEL", "tags": ["sf"]});
    let resp = post_json(&f.url("/v1/shelves/s1/books?requestId=r-1"), &body).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let (path, msg) = f.received("testapi.v1.CreateBookRequest");
    assert_eq!(path, "/testapi.v1.Library/CreateBook");
    assert_eq!(
        msg,
        json!({"shelf": "s1", "request_id": "r-1",
               "book": {"title": "Dune", "page_count": "412", "kind": "NOVEL", "tags": ["sf"]}})
    );
}

#[tokio::test]
async fn dotted_path_variable_into_the_body_field() {
    let f = fixture().await;
    let resp = send(
        "PATCH",
        &f.url("/v1/shelves/s1/books/b1"),
        &[],
        r#"{"title": "New", "name": "ignored"}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let (path, msg) = f.received("testapi.v1.UpdateBookRequest");
    assert_eq!(path, "/testapi.v1.Library/UpdateBook");
    assert_eq!(
        msg,
        json!({"book": {"name": "shelves/s1/books/b1", "title": "New"}, "update_mask": "name,title"}),
        "the path wins over the body, and PATCH fills the mask from the body's keys"
    );
}

#[tokio::test]
async fn body_star_ignores_the_query_and_path_wins_over_body() {
    let f = fixture().await;
    let resp = send(
        "PUT",
        &f.url("/v1/books/b9?title=fromquery"),
        &[],
        r#"{"name": "body", "title": "T"}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let (_, msg) = f.received("testapi.v1.Book");
    assert_eq!(msg, json!({"name": "b9", "title": "T"}));
}

#[tokio::test]
async fn a_body_sent_to_a_rule_without_body_is_ignored() {
    let f = fixture().await;
    let resp = send("GET", &f.url("/v2/books/b1"), &[], r#"{"name": "x"}"#).await;
    assert_eq!(resp.status, 200);
    assert_eq!(f.received(GET_REQ).1, json!({"name": "b1"}));
}

#[tokio::test]
async fn query_parameters_of_every_kind() {
    let f = fixture().await;
    let query = "pageSize=10&page_token=abc+def&tags=a&tags=b%20c&kind=POETRY&since=2024-01-02T03:04:05Z\
                 &limit=5&filter.authorName=Herbert&filter.nested.kind=1&labels[k1]=v1&labels[k2]=v2\
                 &tokenBytes=-_8&maxAge=1.5s&fields=title,page_count&exact=true&minPrice=2.5\
                 &minCopies=18446744073709551615&years=1965&years=1966&unknown=ignored";
    let resp = get(&f.url(&format!("/v1/shelves/s1/books?{query}"))).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let (path, msg) = f.received(LIST_REQ);
    assert_eq!(path, "/testapi.v1.Library/ListBooks");
    assert_eq!(
        msg,
        json!({
            "shelf": "s1", "page_size": 10, "page_token": "abc def", "tags": ["a", "b c"],
            "kind": "POETRY", "since": "2024-01-02T03:04:05Z", "limit": 5,
            "filter": {"author_name": "Herbert", "nested": {"kind": "NOVEL"}},
            "labels": {"k1": "v1", "k2": "v2"}, "token_bytes": "+/8=", "max_age": "1.500s",
            "fields": "title,pageCount", "exact": true, "min_price": 2.5,
            "min_copies": "18446744073709551615", "years": [1965, 1966]
        })
    );
}

#[tokio::test]
async fn query_cannot_override_a_path_variable() {
    let f = fixture().await;
    let resp = get(&f.url("/v1/shelves/s1/books?shelf=other&pageSize=2")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        f.received(LIST_REQ).1,
        json!({"shelf": "s1", "page_size": 2})
    );
}

#[tokio::test]
async fn repeated_path_variable_splits_on_commas_and_nested_variable() {
    let f = fixture().await;
    let resp = send("PUT", &f.url("/v1/tags/a,b,c/lbl"), &[], r#""a note""#).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let (_, msg) = f.received("testapi.v1.SetTagsRequest");
    assert_eq!(
        msg,
        json!({"tags": ["a", "b", "c"], "sub": {"label": "lbl"}, "note": "a note"})
    );
}

#[tokio::test]
async fn int64_path_variable() {
    let f = fixture().await;
    assert_eq!(
        send("DELETE", &f.url("/v1/shelves/s1/books/-42"), &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        f.received("testapi.v1.DeleteBookRequest").1,
        json!({"shelf": "s1", "book_id": "-42"})
    );
}

#[tokio::test]
async fn response_json_follows_grpc_gateway_defaults() {
    let pool = library_pool();
    let book = encode_json(
        &pool,
        "testapi.v1.Book",
        json!({"name": "b", "author_name": "A", "page_count": "7", "kind": "NOVEL", "isbn13": "978"}),
    );
    let f = fixture_with(book).await;
    let body = get(&f.url("/v2/books/b")).await.json();
    assert_eq!(body["authorName"], "A", "lowerCamel names");
    assert_eq!(body["pageCount"], "7", "int64 as a string");
    assert_eq!(body["kind"], "NOVEL", "enum by name");
    assert_eq!(
        body["tags"],
        json!([]),
        "unpopulated repeated field emitted"
    );
    assert_eq!(body["available"], false, "unpopulated scalar emitted");
    assert_eq!(body["isbn13"], "978");
    assert!(body.get("isbn10").is_none(), "unset oneof member omitted");
}

#[tokio::test]
async fn response_body_selects_a_scalar_a_list_or_a_number() {
    let pool = library_pool();
    let reply = encode_json(
        &pool,
        "testapi.v1.ListBooksResponse",
        json!({"books": [{"title": "x"}, {"title": "y"}], "total": "2"}),
    );
    let f = fixture_with(reply).await;
    let list = get(&f.url("/v1/shelves")).await;
    assert_eq!(list.status, 200);
    let titles: Vec<_> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["title"].clone())
        .collect();
    assert_eq!(titles, vec![json!("x"), json!("y")]);
    assert_eq!(get(&f.url("/v1/shelves/s1/count")).await.json(), json!("2"));

    let book = encode_json(&pool, "testapi.v1.Book", json!({"title": "Dune"}));
    let f = fixture_with(book).await;
    assert_eq!(
        get(&f.url("/v1/shelves/s/books/b:title")).await.json(),
        json!("Dune")
    );
}

#[tokio::test]
async fn http_body_in_and_out_is_raw() {
    let pool = library_pool();
    let raw = encode_json(
        &pool,
        "google.api.HttpBody",
        json!({"content_type": "image/png", "data": "iVBORw0KGgo="}),
    );
    let f = fixture_with(raw).await;
    let resp = get(&f.url("/v1/raw/img")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("image/png"));
    assert_eq!(resp.body.as_ref(), b"\x89PNG\r\n\x1a\n");

    let f = fixture().await;
    let resp = send(
        "POST",
        &f.url("/v1/raw"),
        &[("content-type", "text/csv")],
        "a,b\n1,2\n",
    )
    .await;
    assert_eq!(resp.status, 200);
    let (path, msg) = f.received("google.api.HttpBody");
    assert_eq!(path, "/testapi.v1.Library/Upload");
    assert_eq!(
        msg,
        json!({"content_type": "text/csv", "data": "YSxiCjEsMgo="})
    );
}
