//! Every failure a REST client can meet, end to end through the real gateway: routing (404,
//! 405), request assembly (400, 413), upstream statuses and their details and metadata,
//! deadlines (504), unreachable or broken upstreams (503, 500) and gRPC protocol violations
//! by a hand-built HTTP/2 upstream (an unreachable one through native gRPC and gRPC-Web too:
//! the service is named, never its address). Each error is checked for its HTTP status, its
//! `application/json` content type, its `{"code","message","details"}` body in that order,
//! and whether the backend was called; the big tests end with a good request on the same
//! gateway.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use futures_util::stream;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::DescriptorPool;
use protogate::demo::backend::{self, Call, Reply};
use protogate::server::Settings;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const GET_REQ: &str = "testapi.v1.GetBookRequest";
const LIST_REQ: &str = "testapi.v1.ListBooksRequest";
const BOOK: &str = "testapi.v1.Book";

/// Checks that `resp` is a `google.rpc.Status` error answered with `status` and `code`, its
/// keys in the order `code`, `message`, `details`; returns the message.
#[track_caller]
fn error_message(resp: &Resp, status: u16, code: i32) -> String {
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    assert_eq!(resp.status, status, "{text}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{text}"
    );
    assert!(text.starts_with("{\"code\":"), "{text}");
    let body = resp.json();
    assert_eq!(body["code"], code, "{text}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{text}");
    assert!(body["details"].is_array(), "{text}");
    let message = body["message"]
        .as_str()
        .expect("a string message")
        .to_string();
    let prefix = format!(
        "{{\"code\":{code},\"message\":{},\"details\":[",
        serde_json::to_string(&message).unwrap()
    );
    assert!(text.starts_with(&prefix), "{text}");
    message
}

/// An error whose message contains every one of `needles`.
#[track_caller]
fn assert_error(resp: &Resp, status: u16, code: i32, needles: &[&str]) {
    let message = error_message(resp, status, code);
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

fn book(pool: &DescriptorPool, title: &str) -> Bytes {
    encode_json(pool, BOOK, json!({ "title": title }))
}

/// The `name` of a `GetBookRequest` the backend received.
fn requested_name(pool: &DescriptorPool, call: &Call) -> String {
    decode_json(pool, GET_REQ, &call.message)["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The metadata of a call as plain headers.
fn metadata_of(call: &Call) -> HeaderMap {
    call.metadata.clone().into_headers()
}

struct Fixture {
    backend: Backend,
    gw: Gw,
    pool: DescriptorPool,
}

/// A backend answering GetBook with the book "Dune" and every other method with an empty
/// message, and a gateway in front of it.
async fn fixture(settings: Settings) -> Fixture {
    let pool = library_pool();
    let dune = book(&pool, "Dune");
    let backend = Backend::start(move |call| {
        let message = match call.path.as_str() {
            "/testapi.v1.Library/GetBook" => dune.clone(),
            _ => Bytes::new(),
        };
        Ok(Reply {
            message,
            metadata: Default::default(),
        })
    })
    .await;
    let gw = start_gateway(library_sources(), &backend.url, settings).await;
    Fixture { backend, gw, pool }
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.gw.base, path)
    }

    /// The backend was not called at all.
    #[track_caller]
    fn assert_no_calls(&self) {
        let calls = self.backend.calls();
        assert!(calls.is_empty(), "unexpected upstream calls: {calls:?}");
    }
}

/// A good request on `base` still succeeds with the book `title`.
async fn still_serving(base: &str, path: &str, title: &str) {
    let resp = get(&format!("{base}{path}")).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json()["title"], title);
}

// --- routing -------------------------------------------------------------------------

#[tokio::test]
async fn unknown_path_is_404_naming_the_path() {
    let f = fixture(Settings::default()).await;
    for (method, path) in [
        ("GET", "/v1/nope"),
        ("POST", "/v3/books/b1"),
        ("GET", "/v1/shelves/s1/books/"),
        ("PUT", "/v1/books/b1/"),
        ("GET", "/v2/books/"),
    ] {
        let resp = send(method, &f.url(path), &[], "").await;
        let message = error_message(&resp, 404, 5);
        assert!(
            message.contains(&format!("{path:?}")),
            "{method} {path}: {message}"
        );
        assert!(resp.headers.get("allow").is_none(), "{method} {path}");
    }
    f.assert_no_calls();
    still_serving(&f.gw.base, "/v2/books/b1", "Dune").await;
}

#[tokio::test]
async fn other_method_on_a_known_path_is_405_with_allow() {
    let f = fixture(Settings::default()).await;
    for (method, path, allow) in [
        ("PUT", "/v1/shelves/s1/books", "GET, POST"),
        ("DELETE", "/v1/shelves/s1/books", "GET, POST"),
        ("GET", "/v1/books/b1", "PUT"),
        ("GET", "/v1/books:search", "SEARCH"),
    ] {
        let resp = send(method, &f.url(path), &[], "").await;
        assert_error(&resp, 405, 12, &[method, &format!("{path:?}")]);
        assert_eq!(resp.header("allow"), Some(allow), "{method} {path}");
    }
    f.assert_no_calls();
    still_serving(&f.gw.base, "/v2/books/b1", "Dune").await;
}

/// The brief's `streaming_method_is_501` predates streaming over REST (commit 0262231):
/// `Watch` is now served as a stream, and 501 comes only from an upstream that does not
/// implement it, answered as a plain error because it fails before the first message.
#[tokio::test]
async fn streaming_method_is_served_and_an_unimplemented_one_is_501() {
    let pool = library_pool();
    let reply_pool = pool.clone();
    let backend = Backend::start(move |call| {
        if requested_name(&reply_pool, call) == "missing" {
            return Err(tonic::Status::unimplemented(
                "method testapi.v1.Library.Watch is not implemented",
            ));
        }
        Ok(Reply {
            message: book(&reply_pool, "Dune"),
            metadata: Default::default(),
        })
    })
    .await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;

    let resp = get(&format!("{}/v1/watch/missing", gw.base)).await;
    assert_error(&resp, 501, 12, &["testapi.v1.Library.Watch"]);

    let resp = get(&format!("{}/v1/watch/x", gw.base)).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let text = String::from_utf8_lossy(&resp.body);
    assert!(
        text.starts_with("{\"result\":{") && text.ends_with("}\n"),
        "{text}"
    );
    let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(line["result"]["title"], "Dune");
    let calls = backend.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.path == "/testapi.v1.Library/Watch"));
    assert_eq!(requested_name(&pool, &calls[1]), "x");
}

// --- request assembly ----------------------------------------------------------------

#[tokio::test]
async fn bad_json_body_is_400_with_position_and_no_upstream_call() {
    let f = fixture(Settings::default()).await;
    let bodies = [
        r#"{"title":"#,
        r#"{"pageCount":"abc"}"#,
        r#"{} x"#,
        r#"[{"title":"a"}]"#,
        r#"{"copies": -1}"#,
        r#"{"title": 5}"#,
        r#"{"published": "yesterday"}"#,
        r#"{"title": "a",}"#,
        r#""just a string""#,
        r#"{"pageCount": 1.5}"#,
    ];
    for (method, path) in [("POST", "/v1/shelves/s1/books"), ("PUT", "/v1/books/b1")] {
        for body in bodies {
            let resp = send(
                method,
                &f.url(path),
                &[("content-type", "application/json")],
                body,
            )
            .await;
            let message = error_message(&resp, 400, 3);
            assert!(
                message.contains("invalid JSON body for testapi.v1.Book")
                    && message.contains("line 1 column"),
                "{method} {path} {body}: {message}"
            );
        }
    }
    f.assert_no_calls();
    let resp = send(
        "PUT",
        &f.url("/v1/books/b1"),
        &[("content-type", "application/json")],
        r#"{"title": "ok"}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(f.backend.calls().len(), 1);
}

#[tokio::test]
async fn bad_path_values_are_400() {
    let f = fixture(Settings::default()).await;
    for (method, path, needles) in [
        (
            "DELETE",
            "/v1/shelves/s1/books/notanumber",
            &["book_id", "notanumber", "int64"][..],
        ),
        (
            "DELETE",
            "/v1/shelves/s1/books/9223372036854775808",
            &["book_id", "9223372036854775808"],
        ),
        ("GET", "/v1/things/%G1", &["percent-escape", "%G1"]),
        ("GET", "/v1/things/ab%4", &["percent-escape", "ab%4"]),
        ("GET", "/v1/things/%FF%FE", &["UTF-8", "%FF%FE"]),
    ] {
        let resp = send(method, &f.url(path), &[], "").await;
        let message = error_message(&resp, 400, 3);
        for needle in needles {
            assert!(message.contains(needle), "{method} {path}: {message}");
        }
    }
    f.assert_no_calls();
    let resp = send("DELETE", &f.url("/v1/shelves/s1/books/-7"), &[], "").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(f.backend.calls().len(), 1);
}

#[tokio::test]
async fn bad_query_values_are_400() {
    let f = fixture(Settings::default()).await;
    for (query, key, needle) in [
        ("page_size=abc", "page_size", "int32"),
        ("page_size=2147483648", "page_size", "int32"),
        ("kind=NOPE", "kind", "testapi.v1.Kind"),
        ("page_size=1&page_size=2", "page_size", "too many values"),
        ("order_by=a&order_desc=b", "order_desc", "oneof"),
        ("filters.author_name=x", "filters.author_name", "filters"),
        ("since=yesterday", "since", ""),
        ("years=x", "years", "int32"),
        ("labels=x", "labels", "[key]"),
        ("filter=x", "filter", "testapi.v1.Filter"),
        ("exact=maybe", "exact", "bool"),
    ] {
        let resp = get(&f.url(&format!("/v1/shelves/s1/books?{query}"))).await;
        let message = error_message(&resp, 400, 3);
        assert!(
            message.contains(&format!("query parameter {key:?}")) && message.contains(needle),
            "{query}: {message}"
        );
    }
    f.assert_no_calls();

    let query = "pageSize=5&kind=NOVEL&years=1999&years=2000&labels[a]=b\
                 &filter.authorName=Le%20Guin&orderDesc=title&since=2024-01-02T03:04:05Z&exact=t";
    let resp = get(&f.url(&format!("/v1/shelves/s1/books?{query}"))).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let call = f.backend.only_call();
    assert_eq!(call.path, "/testapi.v1.Library/ListBooks");
    assert_eq!(
        decode_json(&f.pool, LIST_REQ, &call.message),
        json!({
            "shelf": "s1", "page_size": 5, "kind": "NOVEL", "years": [1999, 2000],
            "labels": {"a": "b"}, "filter": {"author_name": "Le Guin"},
            "order_desc": "title", "since": "2024-01-02T03:04:05Z", "exact": true
        })
    );
}

#[tokio::test]
async fn oversized_body_is_413_and_the_gateway_keeps_serving() {
    let f = fixture(Settings {
        max_request_bytes: 1024,
        ..Default::default()
    })
    .await;
    let url = f.url("/v1/shelves/s1/books");
    let json = [("content-type", "application/json")];
    let big = format!("{{\"title\":\"{}\"}}", "a".repeat(4096 - 12));
    assert_eq!(big.len(), 4096);
    let resp = send("POST", &url, &json, big).await;
    assert_error(&resp, 413, 8, &["1024"]);
    f.assert_no_calls();

    let mut exact = String::from(r#"{"title":"fits"}"#);
    exact.push_str(&" ".repeat(1024 - exact.len()));
    assert_eq!(exact.len(), 1024);
    let resp = send("POST", &url, &json, exact).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let call = f.backend.only_call();
    assert_eq!(
        decode_json(&f.pool, "testapi.v1.CreateBookRequest", &call.message),
        json!({"shelf": "s1", "book": {"title": "fits"}})
    );
    still_serving(&f.gw.base, "/v2/books/b1", "Dune").await;
}

// --- upstream statuses ---------------------------------------------------------------

/// A message that needs percent-encoding, JSON escaping and UTF-8 on the way.
const ODD_MESSAGE: &str = "50% \"done\" \u{2014} na\u{ef}ve \u{2713} <b>&'";

/// A backend failing GetBook with the code named by the request's `name` (a number), and
/// answering the book "Dune" for any other name.
async fn status_backend(message: &'static str) -> Backend {
    let pool = library_pool();
    Backend::start(move |call| {
        let name = requested_name(&pool, call);
        match name.parse::<i32>() {
            Ok(code) => Err(tonic::Status::new(tonic::Code::from_i32(code), message)),
            Err(_) => Ok(Reply {
                message: book(&pool, "Dune"),
                metadata: Default::default(),
            }),
        }
    })
    .await
}

#[tokio::test]
async fn upstream_codes_map_to_the_standard_http_statuses() {
    let backend = status_backend(ODD_MESSAGE).await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;
    let table = [
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
    ];
    for (code, status) in table {
        let resp = get(&format!("{}/v2/books/{code}", gw.base)).await;
        let message = error_message(&resp, status, code);
        assert_eq!(message, ODD_MESSAGE, "code {code}");
        let challenge = resp.headers.get("www-authenticate");
        assert_eq!(
            challenge.is_some(),
            code == 16,
            "code {code}: {challenge:?}"
        );
        for name in resp.headers.keys() {
            let name = name.as_str();
            assert!(
                !name.starts_with("grpc-metadata-grpc-")
                    && !name.starts_with("grpc-trailer-grpc-")
                    && !name.starts_with("grpc-metadata-content-type"),
                "code {code}: transport header leaked as {name}"
            );
        }
    }
    assert_eq!(backend.calls().len(), 16);
    still_serving(&gw.base, "/v2/books/b1", "Dune").await;
}

#[tokio::test]
async fn unauthenticated_carries_www_authenticate() {
    const CHALLENGE: &str =
        "Bearer realm=\"library\", error=\"invalid_token\" \u{2014} r\u{e9}essayez";
    let backend = status_backend(CHALLENGE).await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;
    let resp = get(&format!("{}/v2/books/16", gw.base)).await;
    assert_eq!(error_message(&resp, 401, 16), CHALLENGE);
    let header = resp
        .headers
        .get("www-authenticate")
        .expect("a WWW-Authenticate header");
    assert_eq!(header.as_bytes(), CHALLENGE.as_bytes());
    assert_eq!(resp.headers.get_all("www-authenticate").iter().count(), 1);

    let forbidden = get(&format!("{}/v2/books/7", gw.base)).await;
    error_message(&forbidden, 403, 7);
    assert!(forbidden.headers.get("www-authenticate").is_none());
    still_serving(&gw.base, "/v2/books/b1", "Dune").await;
}

/// `google.rpc.Status`, encoded statically.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

#[derive(serde::Deserialize)]
struct RawDetails {
    details: Vec<Box<serde_json::value::RawValue>>,
}

#[tokio::test]
async fn upstream_error_details_are_rendered() {
    let pool = library_pool();
    let bad_request = encode_json(
        &pool,
        "google.rpc.BadRequest",
        json!({"field_violations": [{"field": "title", "description": "required"}]}),
    );
    let error_info = encode_json(
        &pool,
        "google.rpc.ErrorInfo",
        json!({"reason": "TITLE_MISSING", "domain": "library.example", "metadata": {"shelf": "s1"}}),
    );
    let status = RpcStatus {
        code: 3,
        message: "bad book".into(),
        details: vec![
            prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                value: bad_request.to_vec(),
            },
            prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: error_info.to_vec(),
            },
            prost_types::Any {
                type_url: "type.googleapis.com/acme.Unknown".into(),
                value: vec![1, 2, 3],
            },
        ],
    };
    let encoded = Bytes::from(status.encode_to_vec());
    let reply_pool = pool.clone();
    let backend = Backend::start(move |call| {
        if requested_name(&reply_pool, call) == "bad" {
            return Err(tonic::Status::with_details(
                tonic::Code::InvalidArgument,
                "bad book",
                encoded.clone(),
            ));
        }
        Ok(Reply {
            message: book(&reply_pool, "Dune"),
            metadata: Default::default(),
        })
    })
    .await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;

    let resp = get(&format!("{}/v2/books/bad", gw.base)).await;
    assert_eq!(error_message(&resp, 400, 3), "bad book");
    let body = resp.json();
    let details = body["details"].as_array().unwrap();
    assert_eq!(details.len(), 3, "{body}");
    assert_eq!(
        details[0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    let violation = &details[0]["fieldViolations"][0];
    assert_eq!(violation["field"], "title", "{body}");
    assert_eq!(violation["description"], "required", "{body}");
    assert_eq!(
        details[1],
        json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "TITLE_MISSING", "domain": "library.example", "metadata": {"shelf": "s1"}
        })
    );
    let raw: RawDetails = serde_json::from_slice(&resp.body).unwrap();
    for detail in &raw.details {
        assert!(detail.get().starts_with("{\"@type\":"), "{}", detail.get());
    }
    assert_eq!(
        raw.details[2].get(),
        r#"{"@type":"type.googleapis.com/acme.Unknown","value":"AQID"}"#
    );
    assert!(resp
        .headers
        .get("grpc-metadata-grpc-status-details-bin")
        .is_none());
    still_serving(&gw.base, "/v2/books/b1", "Dune").await;
}

#[tokio::test]
async fn response_metadata_comes_back_as_headers() {
    let pool = library_pool();
    let reply_pool = pool.clone();
    let backend = Backend::start(move |call| {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("x-served-by", "b1".parse().unwrap());
        match requested_name(&reply_pool, call).as_str() {
            "gone" => Err(tonic::Status::with_metadata(
                tonic::Code::NotFound,
                "gone",
                metadata,
            )),
            _ => Ok(Reply {
                message: book(&reply_pool, "Dune"),
                metadata,
            }),
        }
    })
    .await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;

    let ok = get(&format!("{}/v2/books/b1", gw.base)).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.header("grpc-metadata-x-served-by"), Some("b1"));
    assert_eq!(ok.json()["title"], "Dune");

    let gone = get(&format!("{}/v2/books/gone", gw.base)).await;
    assert_eq!(error_message(&gone, 404, 5), "gone");
    assert_eq!(gone.header("grpc-metadata-x-served-by"), Some("b1"));
    assert!(gone.headers.get("x-served-by").is_none());
}

// --- request headers -----------------------------------------------------------------

#[tokio::test]
async fn request_headers_are_mapped_to_metadata() {
    let f = fixture(Settings::default()).await;
    let url = f.url("/v2/books/b1");
    let resp = send(
        "GET",
        &url,
        &[
            ("Grpc-Metadata-Foo", "bar"),
            ("Authorization", "Bearer t"),
            ("User-Agent", "errors-test/1.0"),
            ("X-Random", "1"),
            ("Grpc-Metadata-Grpc-Status", "0"),
            ("Grpc-Metadata-Content-Type", "text/evil"),
        ],
        "",
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let md = metadata_of(&f.backend.only_call());
    assert_eq!(md["foo"], "bar");
    assert_eq!(md["authorization"], "Bearer t");
    assert_eq!(md["grpcgateway-authorization"], "Bearer t");
    assert_eq!(md["grpcgateway-user-agent"], "errors-test/1.0");
    assert!(md.get("x-random").is_none(), "{md:?}");
    assert!(md.get("grpc-metadata-foo").is_none(), "{md:?}");
    let forwarded_for = md["x-forwarded-for"].to_str().unwrap();
    assert!(forwarded_for.contains("127.0.0.1"), "{forwarded_for}");
    let host = f.gw.base.trim_start_matches("http://");
    assert_eq!(md["x-forwarded-host"], host);
    assert!(md.get("grpc-status").is_none(), "{md:?}");
    let content_types: Vec<_> = md.get_all("content-type").iter().collect();
    assert_eq!(content_types, vec!["application/grpc"], "{md:?}");

    let bad_bin = send("GET", &url, &[("Grpc-Metadata-Bin-Bin", "!!!")], "").await;
    assert_error(&bad_bin, 400, 3, &["bin-bin", "base64"]);
    let bad_timeout = send("GET", &url, &[("Grpc-Timeout", "soon")], "").await;
    assert_error(&bad_timeout, 400, 3, &["Grpc-Timeout", "soon"]);
    assert_eq!(
        f.backend.calls().len(),
        1,
        "the bad requests reached the backend"
    );
    still_serving(&f.gw.base, "/v2/books/b1", "Dune").await;
}

#[tokio::test]
async fn forward_headers_pass_unchanged() {
    let settings = Settings {
        forward_headers: vec![
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-tenant"),
        ],
        ..Default::default()
    };
    let f = fixture(settings).await;
    let headers = [("X-Request-Id", "req-42"), ("X-Tenant", "Acme Corp")];
    let resp = send("GET", &f.url("/v2/books/b1"), &headers, "").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.header("x-request-id"), Some("req-42"));
    let md = metadata_of(&f.backend.only_call());
    assert_eq!(md["x-request-id"], "req-42");
    assert_eq!(md["x-tenant"], "Acme Corp");
    assert!(md.get("grpcgateway-x-tenant").is_none());

    let plain = fixture(Settings::default()).await;
    let resp = send("GET", &plain.url("/v2/books/b1"), &headers, "").await;
    assert_eq!(resp.status, 200);
    let md = metadata_of(&plain.backend.only_call());
    assert!(
        md.get("x-tenant").is_none(),
        "forwarded without being named"
    );
}

// --- deadlines -----------------------------------------------------------------------

/// The `grpc-timeout` the upstream saw.
#[track_caller]
fn upstream_timeout(call: &Call) -> Duration {
    let md = metadata_of(call);
    let raw = md
        .get("grpc-timeout")
        .expect("the upstream saw a grpc-timeout");
    protogate::grpc::timeout::parse(raw.to_str().unwrap()).expect("a valid grpc-timeout")
}

/// The backend answers after ten seconds, well within the test's bound: an answer that
/// waited for it would be its 200, not a 504.
#[tokio::test]
async fn client_deadline_is_504() {
    let pool = library_pool();
    let backend = Backend::start_slow(Duration::from_secs(10), reply_with(book(&pool, "x"))).await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;
    let started = Instant::now();
    let resp = send(
        "GET",
        &format!("{}/v2/books/b1", gw.base),
        &[("Grpc-Timeout", "200m")],
        "",
    )
    .await;
    let elapsed = started.elapsed();
    assert_error(&resp, 504, 4, &["deadline"]);
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    let seen = upstream_timeout(&backend.only_call());
    assert!(
        seen <= Duration::from_millis(200) && !seen.is_zero(),
        "{seen:?}"
    );
}

/// As [`client_deadline_is_504`], with the deadline from `--timeout`.
#[tokio::test]
async fn configured_timeout_is_504() {
    let pool = library_pool();
    let backend = Backend::start_slow(Duration::from_secs(10), reply_with(book(&pool, "x"))).await;
    let settings = Settings {
        timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let gw = start_gateway(library_sources(), &backend.url, settings).await;
    let started = Instant::now();
    let resp = get(&format!("{}/v2/books/b1", gw.base)).await;
    let elapsed = started.elapsed();
    assert_error(&resp, 504, 4, &["deadline"]);
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    let seen = upstream_timeout(&backend.only_call());
    assert!(
        seen <= Duration::from_millis(200) && !seen.is_zero(),
        "{seen:?}"
    );
}

/// A raw backend that answers GetBook with the book "Dune", after ten seconds when the name
/// is `slow`.
struct SlowForSome {
    url: String,
    _stop: oneshot::Sender<()>,
}

async fn slow_for_some() -> SlowForSome {
    let pool = library_pool();
    let handler = backend::handler(move |call: Call| {
        let pool = pool.clone();
        async move {
            if requested_name(&pool, &call) == "slow" {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Ok(Reply {
                message: book(&pool, "Dune"),
                metadata: Default::default(),
            })
        }
    });
    let listener = bounded(TcpListener::bind("127.0.0.1:0")).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(backend::serve(listener, handler, async move {
        let _ = stopped.await;
    }));
    SlowForSome { url, _stop: stop }
}

#[tokio::test]
async fn a_timed_out_call_leaves_the_upstream_usable() {
    let backend = slow_for_some().await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;
    let slow = format!("{}/v2/books/slow", gw.base);
    for _ in 0..2 {
        let resp = send("GET", &slow, &[("Grpc-Timeout", "200m")], "").await;
        assert_error(&resp, 504, 4, &[]);
    }
    for _ in 0..4 {
        still_serving(&gw.base, "/v2/books/b1", "Dune").await;
    }
}

// --- unreachable and broken upstreams ------------------------------------------------

/// Asserts that a message a client sees names the service and says nothing of where the
/// upstream is (`url`, `http://127.0.0.1:PORT`).
#[track_caller]
fn assert_names_the_service_only(message: &str, url: &str) {
    let port = url.rsplit(':').next().unwrap();
    assert!(
        message.starts_with("service testapi.v1.Library is unavailable: cannot connect"),
        "{message}"
    );
    for secret in ["127.0.0.1", port, "http://"] {
        assert!(!message.contains(secret), "{secret:?} in {message:?}");
    }
}

#[tokio::test]
async fn backend_down_is_503_naming_the_service_not_the_address() {
    let url = dead_url().await;
    let gw = start_gateway(library_sources(), &url, Settings::default()).await;
    for _ in 0..2 {
        let resp = get(&format!("{}/v2/books/b1", gw.base)).await;
        assert_names_the_service_only(&error_message(&resp, 503, 14), &url);
    }

    // Native gRPC: the status message.
    let mut client = grpc_client(&gw.base).await;
    let path = http::uri::PathAndQuery::from_static("/testapi.v1.Library/GetBook");
    let request = tonic::Request::new(Bytes::new());
    let status = bounded(client.unary(request, path, backend::RawCodec))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_names_the_service_only(status.message(), &url);

    // gRPC-Web: the grpc-message header of a trailers-only answer.
    let resp = send(
        "POST",
        &format!("{}/testapi.v1.Library/GetBook", gw.base),
        &[("content-type", "application/grpc-web+proto")],
        protogate::grpc::frame::encode_raw(&[]),
    )
    .await;
    assert_eq!(resp.header("grpc-status"), Some("14"), "{resp:?}");
    let encoded = resp.header("grpc-message").unwrap();
    let message = protogate::grpc::status::decode_message(encoded.as_bytes());
    assert_names_the_service_only(&message, &url);

    let live = fixture(Settings::default()).await;
    still_serving(&live.gw.base, "/v2/books/b1", "Dune").await;
}

#[tokio::test]
async fn an_upstream_that_hangs_up_is_503() {
    let listener = bounded(TcpListener::bind("127.0.0.1:0")).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let rude = AbortOnDrop(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    }));
    let gw = start_gateway(library_sources(), &url, Settings::default()).await;
    let port = url.rsplit(':').next().unwrap();
    for _ in 0..2 {
        let resp = get(&format!("{}/v2/books/b1", gw.base)).await;
        let message = error_message(&resp, 503, 14);
        assert!(
            message.starts_with("service testapi.v1.Library is unavailable: "),
            "{message}"
        );
        assert!(!message.contains(port), "{message}");
    }
    drop(rude);
}

#[tokio::test]
async fn invalid_upstream_message_is_500() {
    let pool = library_pool();
    let reply_pool = pool.clone();
    let backend = Backend::start(move |call| {
        let message = match requested_name(&reply_pool, call).as_str() {
            "garbage" => Bytes::from_static(&[0xff, 0xff]),
            _ => book(&reply_pool, "Dune"),
        };
        Ok(Reply {
            message,
            metadata: Default::default(),
        })
    })
    .await;
    let gw = start_gateway(library_sources(), &backend.url, Settings::default()).await;
    let resp = get(&format!("{}/v2/books/garbage", gw.base)).await;
    assert_error(&resp, 500, 13, &["testapi.v1.Book"]);
    still_serving(&gw.base, "/v2/books/b1", "Dune").await;
}

#[tokio::test]
async fn oversized_upstream_message_is_429() {
    let pool = library_pool();
    let reply_pool = pool.clone();
    // A Book with only a title of n bytes (n < 128) encodes to n + 2 bytes.
    let backend = Backend::start(move |call| {
        let name = requested_name(&reply_pool, call);
        let title_len = match name.as_str() {
            "64" => 62,
            "65" => 63,
            _ => (1 << 20) - 4,
        };
        let message = book(&reply_pool, &"a".repeat(title_len));
        Ok(Reply {
            message,
            metadata: Default::default(),
        })
    })
    .await;
    assert_eq!(book(&pool, &"a".repeat(62)).len(), 64);
    assert_eq!(book(&pool, &"a".repeat(63)).len(), 65);
    assert_eq!(book(&pool, &"a".repeat((1 << 20) - 4)).len(), 1 << 20);
    let settings = Settings {
        max_response_bytes: 64,
        ..Default::default()
    };
    let gw = start_gateway(library_sources(), &backend.url, settings).await;
    let url = |name: &str| format!("{}/v2/books/{name}", gw.base);

    let fits = get(&url("64")).await;
    assert_eq!(fits.status, 200, "{:?}", fits.body);
    assert_eq!(fits.json()["title"], "a".repeat(62));
    for name in ["65", "1m"] {
        let resp = get(&url(name)).await;
        assert_error(&resp, 429, 8, &["64"]);
    }
    let again = get(&url("64")).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
}

// --- a hand-built HTTP/2 upstream ----------------------------------------------------

type RawBody = BoxBody<Bytes, Infallible>;

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An h2c server that answers every request with `answer(scenario)`, where `scenario` is the
/// request's `scenario` metadata (sent by the client as `Grpc-Metadata-Scenario`).
struct RawUpstream {
    url: String,
    _task: AbortOnDrop,
}

async fn raw_upstream(answer: fn(&str) -> Response<RawBody>) -> RawUpstream {
    let listener = bounded(TcpListener::bind("127.0.0.1:0")).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            while connections.try_join_next().is_some() {}
            connections.spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| async move {
                        let scenario = request
                            .headers()
                            .get("scenario")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("ok")
                            .to_string();
                        Ok::<_, Infallible>(answer(&scenario))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    RawUpstream {
        url,
        _task: AbortOnDrop(task),
    }
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

/// A response with `headers`, then `data` chunks, then `trailers` (when given).
fn raw_response(
    status: u16,
    headers: &[(&str, &str)],
    data: Vec<Bytes>,
    trailers: Option<&[(&str, &str)]>,
) -> Response<RawBody> {
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> =
        data.into_iter().map(|d| Ok(Frame::data(d))).collect();
    if let Some(trailers) = trailers {
        frames.push(Ok(Frame::trailers(header_map(trailers))));
    }
    let mut response = Response::new(StreamBody::new(stream::iter(frames)).boxed());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    *response.headers_mut() = header_map(headers);
    response
}

/// The encoded Book titled "Dune" (field 2), framed.
fn dune_frame() -> Bytes {
    protogate::grpc::frame::encode_raw(b"\x12\x04Dune")
}

const GRPC_HEADERS: &[(&str, &str)] = &[("content-type", "application/grpc")];
const OK: &[(&str, &str)] = &[("grpc-status", "0")];

fn misbehaving(scenario: &str) -> Response<RawBody> {
    let frame = |bytes: &'static [u8]| vec![Bytes::from_static(bytes)];
    match scenario {
        "502" => raw_response(
            502,
            &[("content-type", "text/html")],
            vec![Bytes::from_static(b"<html>bad gateway</html>")],
            None,
        ),
        "403" => raw_response(403, &[("content-type", "text/plain")], vec![], None),
        "html" => raw_response(
            200,
            &[("content-type", "text/html")],
            vec![Bytes::from_static(b"<html>hello</html>")],
            None,
        ),
        "no-status" => raw_response(
            200,
            GRPC_HEADERS,
            vec![dune_frame()],
            Some(&[("x-other", "1")]),
        ),
        "two-messages" => raw_response(
            200,
            GRPC_HEADERS,
            vec![dune_frame(), dune_frame()],
            Some(OK),
        ),
        "no-message" => raw_response(200, GRPC_HEADERS, vec![], Some(OK)),
        "truncated" => raw_response(200, GRPC_HEADERS, frame(&[0, 0, 0, 0, 5, 1, 2]), Some(OK)),
        "compressed" => raw_response(200, GRPC_HEADERS, frame(&[1, 0, 0, 0, 1, 9]), Some(OK)),
        "flag-7" => raw_response(200, GRPC_HEADERS, frame(&[7, 0, 0, 0, 0]), Some(OK)),
        "status-99" => raw_response(
            200,
            GRPC_HEADERS,
            vec![dune_frame()],
            Some(&[("grpc-status", "99"), ("grpc-message", "odd")]),
        ),
        "trailer-error" => raw_response(
            200,
            &[("content-type", "application/grpc"), ("x-head", "h1")],
            vec![],
            Some(&[
                ("grpc-status", "5"),
                ("grpc-message", "no%20such%20book"),
                ("x-tail", "t1"),
            ]),
        ),
        "bad-details" => trailers_only_not_found("!!not base64!!"),
        // `google.rpc.Status{code: 3, message: "x"}`: another code than grpc-status.
        "other-details" => trailers_only_not_found("CAMSAXg"),
        "bad-details-trailers" => raw_response(
            200,
            GRPC_HEADERS,
            vec![],
            Some(&[
                ("grpc-status", "5"),
                ("grpc-message", "no%20such%20book"),
                // 0xff 0xff: base64, but no message.
                ("grpc-status-details-bin", "//8"),
            ]),
        ),
        "trailers-only-ok" => {
            let mut response = Response::new(Empty::new().boxed());
            *response.headers_mut() =
                header_map(&[("content-type", "application/grpc"), ("grpc-status", "0")]);
            response
        }
        _ => raw_response(200, GRPC_HEADERS, vec![dune_frame()], Some(OK)),
    }
}

/// A trailers-only NOT_FOUND "no such book" with `details` as its `grpc-status-details-bin`.
fn trailers_only_not_found(details: &str) -> Response<RawBody> {
    let mut response = Response::new(Empty::new().boxed());
    *response.headers_mut() = header_map(&[
        ("content-type", "application/grpc"),
        ("grpc-status", "5"),
        ("grpc-message", "no%20such%20book"),
        ("grpc-status-details-bin", details),
    ]);
    response
}

async fn scenario(gw: &Gw, name: &str) -> Resp {
    send(
        "GET",
        &format!("{}/v2/books/b1", gw.base),
        &[("Grpc-Metadata-Scenario", name)],
        "",
    )
    .await
}

#[tokio::test]
async fn upstream_protocol_failures_map_to_statuses() {
    let upstream = raw_upstream(misbehaving).await;
    let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
    let cases: [(&str, u16, i32, &str); 10] = [
        ("502", 503, 14, "502"),
        ("403", 403, 7, "403"),
        ("html", 500, 2, "text/html"),
        ("no-status", 500, 13, "without a grpc-status"),
        ("two-messages", 500, 13, "several response messages"),
        ("no-message", 500, 13, "no response message"),
        ("truncated", 500, 13, "ended inside a frame"),
        ("compressed", 500, 13, "compressed"),
        ("flag-7", 500, 13, "flag 7"),
        ("status-99", 500, 2, "odd"),
    ];
    for (name, status, code, needle) in cases {
        let resp = scenario(&gw, name).await;
        let message = error_message(&resp, status, code);
        assert!(message.contains(needle), "{name}: {message}");
    }
    let ok = scenario(&gw, "ok").await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.json()["title"], "Dune");
}

#[tokio::test]
async fn an_error_status_in_trailers_is_mapped_like_a_trailers_only_one() {
    let upstream = raw_upstream(misbehaving).await;
    let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
    let resp = scenario(&gw, "trailer-error").await;
    assert_eq!(error_message(&resp, 404, 5), "no such book");
    assert_eq!(resp.header("grpc-metadata-x-head"), Some("h1"));
    assert_eq!(resp.header("grpc-trailer-x-tail"), Some("t1"));
    assert!(resp.headers.get("grpc-trailer-grpc-status").is_none());
    assert!(resp.headers.get("grpc-trailer-grpc-message").is_none());
    let ok = scenario(&gw, "ok").await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
}

#[tokio::test]
async fn a_trailers_only_ok_without_a_message_is_500() {
    let upstream = raw_upstream(misbehaving).await;
    let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
    let resp = scenario(&gw, "trailers-only-ok").await;
    assert_error(
        &resp,
        500,
        13,
        &["no response message", "testapi.v1.Library.GetBook"],
    );
    let ok = scenario(&gw, "ok").await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.json()["title"], "Dune");
}

/// Status details that gRPC clients cannot read (not base64, not a `google.rpc.Status`, or
/// another code than `grpc-status`) are dropped: every client gets the upstream's status.
#[tokio::test]
async fn invalid_upstream_status_details_leave_the_upstream_status() {
    let upstream = raw_upstream(misbehaving).await;
    let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
    let mut client = grpc_client(&gw.base).await;
    let url = format!("{}/testapi.v1.Library/GetBook", gw.base);
    for name in ["bad-details", "other-details", "bad-details-trailers"] {
        let resp = scenario(&gw, name).await;
        assert_eq!(error_message(&resp, 404, 5), "no such book", "{name}");
        assert_eq!(resp.json()["details"], json!([]), "{name}");

        let mut request = tonic::Request::new(Bytes::new());
        request
            .metadata_mut()
            .insert("scenario", name.parse().unwrap());
        let path = http::uri::PathAndQuery::from_static("/testapi.v1.Library/GetBook");
        bounded(client.ready()).await.unwrap();
        let status = bounded(client.unary(request, path, backend::RawCodec))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{name}: {status:?}");
        assert_eq!(status.message(), "no such book", "{name}");
        assert!(status.details().is_empty(), "{name}: {status:?}");

        let headers = [
            ("content-type", "application/grpc-web+proto"),
            ("scenario", name),
        ];
        let resp = send(
            "POST",
            &url,
            &headers,
            protogate::grpc::frame::encode_raw(&[]),
        )
        .await;
        assert_eq!(resp.status, 200, "{name}");
        assert!(resp.header("grpc-status-details-bin").is_none(), "{name}");
        let body = String::from_utf8_lossy(&resp.body);
        assert!(!body.contains("grpc-status-details-bin"), "{name}: {body}");
        assert!(
            resp.header("grpc-status") == Some("5") || body.contains("grpc-status:5"),
            "{name}: {resp:?}"
        );
    }
    let ok = scenario(&gw, "ok").await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
}
