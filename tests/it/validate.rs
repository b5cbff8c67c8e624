//! `--validate`: requests checked against their `buf.validate` rules before any upstream call,
//! over REST, Connect, native gRPC and gRPC-Web, with protovalidate's kinds of rules (string,
//! number, repeated, map, nested message, required oneof, message-level CEL) in
//! `tests/protos/validate/v1/validate.proto`, which imports the built-in
//! `buf/validate/validate.proto`. A violation never reaches the backend; a valid request, a
//! type without rules and everything with the flag off reach it unchanged.

use std::path::PathBuf;

use crate::support::*;
use bytes::Bytes;
use http::uri::PathAndQuery;
use protogate::demo::backend::RawCodec;
use protogate::descriptor::Sources;
use protogate::server::Settings;
use serde_json::{json, Value};

const SIGNUP: &str = "validate.v1.Signup";

fn sources() -> Sources {
    Sources {
        protos: vec![PathBuf::from("validate/v1/validate.proto")],
        includes: vec![repo_path("tests/protos")],
        ..Sources::default()
    }
}

fn pool() -> prost_reflect::DescriptorPool {
    protogate::descriptor::load(&sources()).unwrap()
}

/// A signup that keeps every rule.
fn valid() -> Value {
    json!({
        "name": "alice",
        "email": "alice@example.com",
        "age": 30,
        "score": 50.5,
        "tags": ["a", "b"],
        "limits": {"ab": 1},
        "address": {"city": "Oslo"},
        "phone": "555",
        "password": "secret",
        "confirm": "secret"
    })
}

/// `valid()` with `changes` applied (a `null` removes the key).
fn with(changes: Value) -> Value {
    let mut body = valid();
    for (key, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => body.as_object_mut().unwrap().remove(key),
            v => body.as_object_mut().unwrap().insert(key.clone(), v.clone()),
        };
    }
    body
}

/// Each rule broken once: the change, the violation's field path and its rule id.
fn violations() -> Vec<(Value, &'static str, &'static str)> {
    vec![
        (json!({"name": "al"}), "name", "string.min_len"),
        (
            json!({"name": "abcdefghijklmnopq"}),
            "name",
            "string.max_len",
        ),
        (json!({"name": "Alice"}), "name", "string.pattern"),
        (json!({"email": "not an address"}), "email", "string.email"),
        (json!({"age": 17}), "age", "int32.gte_lt"),
        (json!({"age": 150}), "age", "int32.gte_lt"),
        (json!({"score": 0}), "score", "double.gt_lte"),
        (json!({"score": 100.5}), "score", "double.gt_lte"),
        (json!({"tags": []}), "tags", "repeated.min_items"),
        (json!({"tags": ["a", "a"]}), "tags", "repeated.unique"),
        (json!({"limits": {}}), "limits", "map.min_pairs"),
        (
            json!({"limits": {"a": 1}}),
            "limits[\"a\"]",
            "string.min_len",
        ),
        (json!({"limits": {"ab": 0}}), "limits[\"ab\"]", "int32.gt"),
        (
            json!({"address": {"city": ""}}),
            "address.city",
            "string.min_len",
        ),
        (json!({"address": null}), "address", "required"),
        (json!({"phone": null}), "contact", "required"),
        (json!({"confirm": "other"}), "", "signup.confirmed"),
    ]
}

struct Fixture {
    backend: Backend,
    gw: Gw,
}

impl Fixture {
    async fn start(validate: bool) -> Fixture {
        // An empty message: every type's default, whichever method is called.
        let backend = Backend::start(reply_with(Bytes::new())).await;
        let settings = Settings {
            validate,
            ..Settings::default()
        };
        let gw = start_gateway(sources(), &backend.url, settings).await;
        Fixture { backend, gw }
    }

    async fn rest(&self, body: &Value) -> Resp {
        post_json(&format!("{}/v1/signups", self.gw.base), body).await
    }

    async fn connect(&self, body: &Value) -> Resp {
        let url = format!("{}/validate.v1.Signups/Create", self.gw.base);
        let json = serde_json::to_vec(body).unwrap();
        let headers = [
            ("content-type", "application/json"),
            ("connect-protocol-version", "1"),
        ];
        send("POST", &url, &headers, json).await
    }

    async fn grpc(&self, body: Value) -> Result<Bytes, tonic::Status> {
        let mut client = grpc_client(&self.gw.base).await;
        let message = encode_json(&pool(), SIGNUP, body);
        let path = PathAndQuery::from_static("/validate.v1.Signups/Create");
        bounded(client.unary(tonic::Request::new(message), path, RawCodec))
            .await
            .map(tonic::Response::into_inner)
    }
}

/// The `@type`s of a JSON `details` array, and the BadRequest's field paths.
fn detail_types(details: &Value) -> Vec<String> {
    let each = details.as_array().unwrap().iter();
    each.map(|d| d["@type"].as_str().unwrap().to_string())
        .collect()
}

fn bad_request_fields(details: &Value) -> Vec<String> {
    let bad = details
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .unwrap();
    bad["fieldViolations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["field"].as_str().unwrap().to_string())
        .collect()
}

fn rule_ids(details: &Value) -> Vec<String> {
    let own = details
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/buf.validate.Violations")
        .unwrap();
    own["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["ruleId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn rest_violations_are_400_with_both_details_and_never_reach_the_upstream() {
    let f = Fixture::start(true).await;
    for (change, field, rule) in violations() {
        let response = f.rest(&with(change.clone())).await;
        assert_eq!(response.status, 400, "{change}: {}", response.json());
        let body = response.json();
        assert_eq!(body["code"], 3, "{change}");
        let details = &body["details"];
        assert_eq!(
            detail_types(details),
            [
                "type.googleapis.com/google.rpc.BadRequest",
                "type.googleapis.com/buf.validate.Violations"
            ],
            "{change}"
        );
        assert_eq!(bad_request_fields(details), [field], "{change}: {body}");
        assert_eq!(rule_ids(details), [rule], "{change}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("validation failed: "),
            "{body}"
        );
    }
    assert!(f.backend.calls().is_empty(), "the upstream was called");
}

#[tokio::test]
async fn rest_checks_the_message_assembled_from_path_and_query() {
    let f = Fixture::start(true).await;
    let url = format!(
        "{}/v1/signups/al?email=alice@example.com&age=30&score=1&tags=a&limits[ab]=1&phone=5",
        f.gw.base
    );
    let response = get(&url).await;
    assert_eq!(response.status, 400, "{}", response.json());
    let fields = bad_request_fields(&response.json()["details"]);
    assert!(fields.contains(&"name".to_string()), "{fields:?}");
    assert!(f.backend.calls().is_empty());
}

#[tokio::test]
async fn a_valid_request_passes_through_every_protocol_unchanged() {
    let f = Fixture::start(true).await;
    let response = f.rest(&valid()).await;
    assert_eq!(response.status, 200, "{}", response.json());
    let response = f.connect(&valid()).await;
    assert_eq!(response.status, 200, "{}", response.json());
    f.grpc(valid()).await.unwrap();
    let calls = f.backend.calls();
    assert_eq!(calls.len(), 3);
    let expected = encode_json(&pool(), SIGNUP, valid());
    for call in calls {
        assert_eq!(call.path, "/validate.v1.Signups/Create");
        assert_eq!(
            decode_json(&pool(), SIGNUP, &call.message),
            decode_json(&pool(), SIGNUP, &expected)
        );
    }
}

#[tokio::test]
async fn rest_streams_check_their_request_messages() {
    let f = Fixture::start(true).await;
    let invalid = with(json!({"tags": []}));
    let response = post_json(&format!("{}/v1/signups:watch", f.gw.base), &invalid).await;
    assert_eq!(response.status, 400, "{:?}", response);
    assert_eq!(bad_request_fields(&response.json()["details"]), ["tags"]);

    let mut body = serde_json::to_vec(&valid()).unwrap();
    body.push(b'\n');
    body.extend_from_slice(&serde_json::to_vec(&invalid).unwrap());
    let url = format!("{}/v1/signups:upload", f.gw.base);
    let response = send("POST", &url, &[("content-type", "application/json")], body).await;
    assert_eq!(response.status, 400, "{:?}", response);
    assert_eq!(bad_request_fields(&response.json()["details"]), ["tags"]);
    let passed = f
        .backend
        .calls()
        .iter()
        .filter(|c| !c.message.is_empty())
        .count();
    assert!(passed <= 1, "the invalid message reached the upstream");
}

#[tokio::test]
async fn connect_violations_are_invalid_argument_with_both_details() {
    let f = Fixture::start(true).await;
    for (change, _, _) in violations() {
        let response = f.connect(&with(change.clone())).await;
        assert_eq!(response.status, 400, "{change}");
        let body = response.json();
        assert_eq!(body["code"], "invalid_argument", "{change}: {body}");
        let types: Vec<&str> = body["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["google.rpc.BadRequest", "buf.validate.Violations"],
            "{body}"
        );
    }
    assert!(f.backend.calls().is_empty(), "the upstream was called");
}

#[tokio::test]
async fn a_connect_stream_message_that_violates_ends_the_stream_with_the_violation() {
    let f = Fixture::start(true).await;
    let message = serde_json::to_vec(&with(json!({"age": 17}))).unwrap();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let url = format!("{}/validate.v1.Signups/Batch", f.gw.base);
    let headers = [("content-type", "application/connect+json")];
    let response = send("POST", &url, &headers, body).await;
    assert_eq!(response.status, 200);
    // The end-stream message: the last envelope, flagged 0x02.
    let end = &response.body[5..];
    assert_eq!(response.body[0], 2, "{response:?}");
    let end: Value = serde_json::from_slice(end).unwrap();
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");
    let types: Vec<&str> = end["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["google.rpc.BadRequest", "buf.validate.Violations"]);
    assert!(
        f.backend.calls().is_empty(),
        "a message reached the upstream"
    );
}

#[tokio::test]
async fn native_grpc_violations_are_status_3_with_details() {
    let f = Fixture::start(true).await;
    for (change, field, _) in violations() {
        let status = f.grpc(with(change.clone())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{change}");
        let details = protogate::grpc::status::status_details(status.details());
        let names: Vec<&str> = details.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["google.rpc.BadRequest", "buf.validate.Violations"],
            "{change}"
        );
        let bad = decode_json(&pool(), "google.rpc.BadRequest", &details[0].1);
        let found = bad["field_violations"][0]["field"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(found, field, "{change}");
    }
    assert!(f.backend.calls().is_empty(), "the upstream was called");
}

#[tokio::test]
async fn grpc_web_violations_are_status_3_with_details() {
    let f = Fixture::start(true).await;
    let message = encode_json(&pool(), SIGNUP, with(json!({"name": "al"})));
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let url = format!("{}/validate.v1.Signups/Create", f.gw.base);
    let headers = [("content-type", "application/grpc-web+proto")];
    let response = send("POST", &url, &headers, framed).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("grpc-status"), Some("3"), "{response:?}");
    assert!(response.header("grpc-status-details-bin").is_some());
    assert!(f.backend.calls().is_empty(), "the upstream was called");
}

#[tokio::test]
async fn with_the_flag_off_rules_are_not_checked() {
    let f = Fixture::start(false).await;
    let invalid = with(json!({"name": "al"}));
    assert_eq!(f.rest(&invalid).await.status, 200);
    assert_eq!(f.connect(&invalid).await.status, 200);
    f.grpc(invalid).await.unwrap();
    assert_eq!(f.backend.calls().len(), 3);
}

#[tokio::test]
async fn a_type_without_rules_is_forwarded_unchanged() {
    let f = Fixture::start(true).await;
    let response = post_json(
        &format!("{}/v1/plain", f.gw.base),
        &json!({"text": "", "n": -5}),
    )
    .await;
    assert_eq!(response.status, 200);
    let call = f.backend.only_call();
    assert_eq!(call.path, "/validate.v1.Signups/Echo");
    let expected = encode_json(&pool(), "validate.v1.Plain", json!({"n": -5}));
    assert_eq!(call.message, expected);
}

#[test]
fn only_types_with_rules_or_holding_them_are_checked() {
    let pool = pool();
    let rules = protogate::validate::Rules::build(&pool);
    let has = |name: &str| rules.has_rules(&pool.get_message_by_name(name).unwrap());
    assert!(has(SIGNUP));
    assert!(has("validate.v1.Address"));
    assert!(!has("validate.v1.Plain"));
    assert!(!has("google.protobuf.Empty"));
    // A type with no rules at all costs nothing: its bytes are not even decoded.
    let plain = pool.get_message_by_name("validate.v1.Plain").unwrap();
    assert!(rules.check_wire(&plain, b"\xff\xff not a message").is_ok());
}

#[test]
fn the_openapi_document_carries_the_rules_json_schema_can_say() {
    let snapshot =
        protogate::snapshot::Snapshot::build(&sources(), &Default::default(), None).unwrap();
    let doc = protogate::openapi::document(&snapshot, &Default::default());
    let signup = &doc["components"]["schemas"][SIGNUP];
    let property = |name: &str| signup["properties"][name].clone();
    let name = property("name");
    assert_eq!(name["minLength"], 3);
    assert_eq!(name["maxLength"], 16);
    assert_eq!(name["pattern"], "^[a-z]+$");
    assert_eq!(property("email")["format"], "email");
    assert_eq!(property("age")["minimum"], 18);
    assert_eq!(property("age")["exclusiveMaximum"], 150);
    assert_eq!(property("score")["exclusiveMinimum"], 0.0);
    assert_eq!(property("score")["maximum"], 100.0);
    assert_eq!(property("tags")["minItems"], 1);
    assert_eq!(property("tags")["uniqueItems"], true);
    assert_eq!(property("limits")["minProperties"], 1);
    assert_eq!(signup["required"], json!(["address"]));
    let plain = &doc["components"]["schemas"]["validate.v1.Plain"];
    assert!(plain.get("required").is_none());
    assert!(plain["properties"]["text"].get("minLength").is_none());
}

/// Runs the binary from the crate root with no `PROTOGATE_*` variable of the caller's.
fn protogate(args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_protogate"));
    command.args(args).current_dir(repo_path(""));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PROTOGATE_") {
            command.env_remove(key);
        }
    }
    command.env("PROTOGATE_LOG", "error").output().unwrap()
}

#[test]
fn a_proto_importing_buf_validate_compiles_with_proto() {
    let proto = "validate/v1/validate.proto";
    let run = protogate(&["routes", "--proto", proto, "-I", "tests/protos"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("/v1/signups"), "{stdout}");
}

#[test]
fn check_with_validate_refuses_rules_that_do_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    let proto = r#"syntax = "proto3";
package broken.v1;
import "buf/validate/validate.proto";
service S { rpc M(Req) returns (Req); }
message Req {
  option (buf.validate.message).cel = {id: "bad", message: "m", expression: "this.nope +"};
  string a = 1;
}
"#;
    std::fs::write(dir.path().join("broken.proto"), proto).unwrap();
    let include = dir.path().to_str().unwrap();
    let upstream = ["--upstream", "http://127.0.0.1:1"];
    let args = ["check", "--proto", "broken.proto", "-I", include];
    let run = protogate(&[&args[..], &upstream[..], &["--validate"]].concat());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains("broken.v1.Req"), "{stderr}");
    // Without the flag the rules are not used, so they do not stop the gateway.
    let run = protogate(&[&args[..], &upstream[..]].concat());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
}
