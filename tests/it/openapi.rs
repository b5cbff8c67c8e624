//! The OpenAPI document: what it says about each field kind and binding form, that it is a
//! valid OpenAPI 3.1 document (checked by `openapi-spec-validator`), that the gateway serves
//! the same document the `openapi` command writes and follows reloads, and that requests
//! generated from it by `schemathesis` get answers that conform to it from the running
//! gateway in front of a real gRPC backend.
//!
//! The Python tools are installed by `.ci/run`. Where they are missing a test says so and
//! skips, except under `CI=true`, where a missing tool fails the test.

use std::io::Write;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use futures_util::StreamExt;
use protogate::demo::backend::{self, Handlers, Reply};
use protogate::descriptor::Sources;
use protogate::server::{DocsSettings, Settings};
use protogate::snapshot::Snapshot;
use protogate::transcode::JsonOptions;
use serde_json::{json, Value};

fn kinds_sources() -> Sources {
    Sources {
        protos: vec![PathBuf::from("kinds/v1/kinds.proto")],
        includes: vec![repo_path("tests/protos")],
        ..Sources::default()
    }
}

fn document_for(sources: &Sources, json: &JsonOptions) -> Value {
    let snapshot = Snapshot::build(sources, &Default::default(), None).unwrap();
    protogate::openapi::document(&snapshot, json)
}

fn kinds() -> Value {
    document_for(&kinds_sources(), &JsonOptions::default())
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no component {name}");
    schema
}

fn property<'a>(doc: &'a Value, message: &str, name: &str) -> &'a Value {
    let p = &schema(doc, message)["properties"][name];
    assert!(p.is_object(), "{message} has no property {name}");
    p
}

fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(
        op.is_object(),
        "no operation {method} {path} in {:?}",
        doc["paths"]
    );
    op
}

fn parameter<'a>(op: &'a Value, name: &str) -> &'a Value {
    op["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no parameter {name} in {op}"))
}

fn has_parameter(op: &Value, name: &str) -> bool {
    op["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == name))
}

#[test]
fn scalars_follow_the_json_mapping() {
    let doc = kinds();
    let m = "kinds.v1.Everything";
    assert_eq!(property(&doc, m, "fInt64")["type"], "string");
    assert_eq!(property(&doc, m, "fInt64")["format"], "int64");
    // 64-bit integers as strings: decimal text within the type's range, no more.
    let pattern = |field: &str| {
        let text = property(&doc, m, field)["pattern"]
            .as_str()
            .unwrap()
            .to_string();
        regex::Regex::new(&text).unwrap()
    };
    let (uint64, int64) = (pattern("fUint64"), pattern("fInt64"));
    for (text, unsigned, signed) in [
        ("0", true, true),
        ("-1", false, true),
        ("18446744073709551615", true, false),
        ("18446744073709551616", false, false),
        ("9223372036854775807", true, true),
        ("9223372036854775808", true, false),
        ("-9223372036854775808", false, true),
        ("-9223372036854775809", false, false),
        ("007", false, false),
    ] {
        assert_eq!(uint64.is_match(text), unsigned, "uint64 {text}");
        assert_eq!(int64.is_match(text), signed, "int64 {text}");
    }
    let float = &property(&doc, m, "fFloat")["oneOf"][0];
    assert_eq!(float["maximum"], f64::from(f32::MAX));
    assert_eq!(property(&doc, m, "fSfixed64")["type"], "string");
    assert_eq!(property(&doc, m, "fInt32")["type"], "integer");
    assert_eq!(property(&doc, m, "fInt32")["maximum"], i32::MAX);
    assert_eq!(property(&doc, m, "fUint32")["minimum"], 0);
    assert_eq!(property(&doc, m, "fBool")["type"], "boolean");
    let double = property(&doc, m, "fDouble");
    assert_eq!(double["oneOf"][0]["type"], "number");
    assert_eq!(
        double["oneOf"][1]["enum"],
        json!(["NaN", "Infinity", "-Infinity"])
    );
    let bytes = property(&doc, m, "fBytes");
    assert_eq!(bytes["contentEncoding"], "base64");
    assert_eq!(bytes["type"], "string");
    assert_eq!(
        property(&doc, m, "color")["$ref"],
        "#/components/schemas/kinds.v1.Color"
    );
    let color = schema(&doc, "kinds.v1.Color");
    assert_eq!(color["enum"], json!(["COLOR_UNSPECIFIED", "BLUE", "RED"]));
    assert!(color["description"]
        .as_str()
        .unwrap()
        .contains("`BLUE` (1): The colour of the sky."));
    assert_eq!(property(&doc, m, "fInt64")["x-field-number"], 4);
    assert_eq!(property(&doc, m, "old")["deprecated"], true);
    assert!(property(&doc, m, "customName").is_object(), "json_name");
}

#[test]
fn messages_maps_oneofs_and_well_known_types_follow_the_json_mapping() {
    let doc = kinds();
    let m = "kinds.v1.Everything";
    let nested = property(&doc, m, "nested");
    assert_eq!(
        nested["anyOf"],
        json!([{ "$ref": "#/components/schemas/kinds.v1.Nested" }, { "type": "null" }]),
        "an unset message field is written as null"
    );
    assert_eq!(
        property(&doc, m, "rNested")["items"]["$ref"],
        "#/components/schemas/kinds.v1.Nested"
    );
    assert_eq!(property(&doc, m, "rInt64")["items"]["type"], "string");
    let map = property(&doc, m, "mInt32Nested");
    assert_eq!(map["type"], "object");
    assert_eq!(
        map["additionalProperties"]["$ref"],
        "#/components/schemas/kinds.v1.Nested"
    );
    assert!(map["propertyNames"]["pattern"].is_string());
    assert_eq!(
        property(&doc, m, "mBoolString")["propertyNames"]["enum"],
        json!(["true", "false"])
    );
    assert_eq!(
        property(&doc, m, "mStringInt64")["additionalProperties"]["type"],
        "string"
    );
    // Oneof members are documented and exclusive, and never null.
    let c_nested = property(&doc, m, "cNested");
    assert_eq!(c_nested["$ref"], "#/components/schemas/kinds.v1.Nested");
    assert!(c_nested["description"]
        .as_str()
        .unwrap()
        .contains("oneof `choice`"));
    let exclusive = &schema(&doc, m)["dependentSchemas"]["cText"]["not"]["anyOf"];
    assert_eq!(
        exclusive,
        &json!([{ "required": ["cNested"] }, { "required": ["cNumber"] }])
    );
    assert!(property(&doc, m, "optInt32")["description"]
        .as_str()
        .unwrap()
        .contains("omitted when not set"));
    // Recursive messages refer to themselves.
    assert_eq!(
        property(&doc, "kinds.v1.Nested", "child")["anyOf"][0]["$ref"],
        "#/components/schemas/kinds.v1.Nested"
    );
    // Well-known types in their JSON forms.
    let wkt = |name: &str| schema(&doc, &format!("google.protobuf.{name}")).clone();
    assert_eq!(wkt("Timestamp")["format"], "date-time");
    assert_eq!(wkt("Duration")["type"], "string");
    assert!(wkt("Duration")["pattern"].as_str().unwrap().ends_with("s$"));
    assert_eq!(wkt("FieldMask")["type"], "string");
    assert_eq!(wkt("Struct")["type"], "object");
    assert_eq!(wkt("ListValue")["type"], "array");
    assert!(wkt("Value").get("type").is_none(), "any JSON value");
    assert_eq!(wkt("Empty")["type"], "object");
    assert_eq!(wkt("Any")["properties"]["@type"]["type"], "string");
    assert_eq!(wkt("Any")["required"], json!(["@type"]));
    assert_eq!(wkt("Int64Value")["type"], "string");
    assert_eq!(wkt("Int32Value")["type"], "integer");
    assert_eq!(wkt("BytesValue")["contentEncoding"], "base64");
    assert_eq!(wkt("BoolValue")["type"], "boolean");
    assert_eq!(property(&doc, m, "nullValue")["type"], "null");
    assert!(
        property(&doc, m, "value").get("anyOf").is_none(),
        "a Value is never null-wrapped: null is one of its values"
    );
    // The error schema.
    let status = schema(&doc, "google.rpc.Status");
    assert_eq!(status["properties"]["code"]["type"], "integer");
    assert_eq!(
        status["properties"]["details"]["items"]["$ref"],
        "#/components/schemas/google.protobuf.Any"
    );
}

#[test]
fn json_flags_change_names_and_forms() {
    let json = JsonOptions {
        use_proto_names: true,
        int64_as_numbers: true,
        enums_as_ints: true,
        emit_unpopulated: false,
        ..JsonOptions::default()
    };
    let doc = document_for(&kinds_sources(), &json);
    let m = "kinds.v1.Everything";
    assert_eq!(property(&doc, m, "f_int64")["type"], "integer");
    assert_eq!(property(&doc, m, "f_uint64")["maximum"], u64::MAX);
    assert_eq!(
        property(&doc, m, "nested")["$ref"],
        "#/components/schemas/kinds.v1.Nested",
        "no nulls when unpopulated fields are omitted"
    );
    assert_eq!(
        property(&doc, m, "renamed")["x-field-number"],
        52,
        "proto names"
    );
    assert_eq!(schema(&doc, "kinds.v1.Color")["enum"], json!([0, 1, 2]));
    assert_eq!(schema(&doc, "kinds.v1.Color")["type"], "integer");
    let query = operation(&doc, "/v1/query/{f_int64}/{color}", "get");
    assert!(has_parameter(query, "nested.label"));
    assert!(!has_parameter(query, "nested.label") || !has_parameter(query, "nestedLabel"));
}

#[test]
fn every_binding_is_an_operation_with_its_parameters_and_bodies() {
    let doc = kinds();
    // The rule and its additional binding, named as grpc-gateway's openapiv2 names them.
    let echo = operation(&doc, "/v1/everything", "post");
    assert_eq!(echo["operationId"], "Kinds_Echo");
    assert_eq!(echo["summary"], "Echo returns everything.");
    assert!(echo["description"]
        .as_str()
        .unwrap()
        .contains("The whole request is the body."));
    assert_eq!(echo["tags"], json!(["kinds.v1.Kinds"]));
    assert_eq!(
        echo["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/kinds.v1.Everything"
    );
    assert!(
        echo.get("parameters").is_none(),
        "body \"*\" reads no query"
    );
    let echo2 = operation(&doc, "/v1/everything/{f_string}", "put");
    assert_eq!(echo2["operationId"], "Kinds_Echo2");
    assert_eq!(parameter(echo2, "f_string")["in"], "path");
    // A multi-segment variable is one parameter with a pattern.
    let get = operation(&doc, "/v1/{name}", "get");
    let name = parameter(get, "name");
    assert_eq!(name["schema"]["pattern"], "^items/[^/]+$");
    assert!(name["description"].as_str().unwrap().contains("slashes"));
    assert!(name["description"]
        .as_str()
        .unwrap()
        .contains("The resource name."));
    assert!(get.get("requestBody").is_none());
    let files = operation(&doc, "/v1/files/{name}", "get");
    assert_eq!(
        parameter(files, "name")["schema"]["pattern"],
        "^(?:[^/]+(?:/[^/]+)*)?$"
    );
    // The verb is appended literally.
    let undelete = operation(&doc, "/v1/{name}:undelete", "post");
    assert_eq!(
        undelete["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/google.protobuf.Empty"
    );
    // Same path shape, other variable names: one OpenAPI path, the simplest names.
    let patch = operation(&doc, "/v1/{name}", "patch");
    let bound = parameter(patch, "name");
    assert!(bound["description"]
        .as_str()
        .unwrap()
        .contains("`item.f_string`"));
    assert_eq!(
        patch["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/kinds.v1.Everything",
        "the body field"
    );
    assert_eq!(parameter(patch, "updateMask")["in"], "query");
    assert!(
        !has_parameter(patch, "item.fString"),
        "fields bound by the body are not query parameters"
    );
    // Query parameters: scalars, enums, repeated, maps, WKTs, nested by dotted path.
    let query = operation(&doc, "/v1/query/{f_int64}/{color}", "get");
    assert_eq!(parameter(query, "f_int64")["schema"]["type"], "integer");
    assert_eq!(
        parameter(query, "color")["schema"]["enum"],
        json!(["COLOR_UNSPECIFIED", "BLUE", "RED"])
    );
    assert!(!has_parameter(query, "fInt64"), "bound by the path");
    assert_eq!(parameter(query, "fBool")["schema"]["type"], "boolean");
    assert_eq!(parameter(query, "rInt64")["schema"]["type"], "array");
    assert_eq!(parameter(query, "rInt64")["explode"], true);
    assert_eq!(parameter(query, "mStringInt64")["style"], "deepObject");
    assert_eq!(
        parameter(query, "timestamp")["schema"]["format"],
        "date-time"
    );
    assert_eq!(parameter(query, "wInt64")["schema"]["type"], "integer");
    assert_eq!(parameter(query, "nested.label")["schema"]["type"], "string");
    assert!(
        !has_parameter(query, "nested.child.label") && !has_parameter(query, "recursive.fBool"),
        "no recursion into a message already on the way"
    );
    assert!(!has_parameter(query, "rNested"), "repeated messages");
    assert!(!has_parameter(query, "any"), "no text form");
    // response_body.
    let count = operation(&doc, "/v1/{name}/count", "get");
    assert_eq!(
        count["responses"]["200"]["content"]["application/json"]["schema"]["type"],
        "string"
    );
    let nested = operation(&doc, "/v1/{name}/nested", "get");
    assert_eq!(
        nested["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"][1],
        json!({ "type": "null" })
    );
    // HttpBody, streams, custom methods, deprecation, errors.
    let upload = operation(&doc, "/v1/upload", "post");
    assert_eq!(
        upload["requestBody"]["content"]["*/*"]["schema"]["format"],
        "binary"
    );
    assert_eq!(
        upload["responses"]["200"]["content"]["*/*"]["schema"]["format"],
        "binary"
    );
    let watch = operation(&doc, "/v1/watch/{name}", "get");
    let ok = &watch["responses"]["200"];
    assert!(ok["description"]
        .as_str()
        .unwrap()
        .contains("{\"result\": message}"));
    assert!(ok["content"]["text/event-stream"].is_object());
    assert_eq!(
        ok["content"]["application/json"]["schema"]["properties"]["error"]["$ref"],
        "#/components/schemas/google.rpc.Status"
    );
    let collect = operation(&doc, "/v1/collect", "post");
    assert!(collect["requestBody"]["description"]
        .as_str()
        .unwrap()
        .contains("stream of request messages"));
    let search = &doc["paths"]["/v1/search"]["x-additionalOperations"]["SEARCH"];
    assert_eq!(search["operationId"], "Kinds_Search");
    for method in ["get", "put", "post", "delete", "patch"] {
        let any = operation(&doc, "/v1/anything/{name}", method);
        assert_eq!(any["operationId"], format!("Kinds_Anything_{method}"));
    }
    assert_eq!(
        operation(&doc, "/v1/old/{name}", "delete")["deprecated"],
        true
    );
    assert_eq!(
        echo["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/google.rpc.Status"
    );
    assert_eq!(doc["tags"][0]["name"], "kinds.v1.Kinds");
    assert_eq!(
        doc["tags"][0]["description"],
        "Kinds answers with the message kinds the JSON mapping knows."
    );
}

/// Every operation names the method's own path for gRPC, gRPC-Web and Connect clients, and
/// whether a Connect `GET` may call it: only unary methods marked `NO_SIDE_EFFECTS`.
#[test]
fn operations_say_how_connect_clients_call_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("peek.proto"),
        r#"syntax = "proto3";
package peek.v1;
import "google/api/annotations.proto";
message Note { string text = 1; }
service Notes {
  rpc Peek(Note) returns (Note) {
    option idempotency_level = NO_SIDE_EFFECTS;
    option (google.api.http) = { get: "/v1/notes/{text}" };
  }
  rpc Write(Note) returns (Note) {
    option (google.api.http) = { post: "/v1/notes" body: "*" };
  }
  rpc Watch(Note) returns (stream Note) {
    option idempotency_level = NO_SIDE_EFFECTS;
    option (google.api.http) = { get: "/v1/notes:watch" };
  }
}
"#,
    )
    .unwrap();
    let sources = Sources {
        protos: vec![PathBuf::from("peek.proto")],
        includes: vec![dir.path().to_path_buf()],
        ..Sources::default()
    };
    let doc = document_for(&sources, &JsonOptions::default());
    let peek = operation(&doc, "/v1/notes/{text}", "get");
    assert_eq!(
        peek["x-protogate-connect"],
        json!({ "path": "/peek.v1.Notes/Peek", "get": true })
    );
    let write = operation(&doc, "/v1/notes", "post");
    assert_eq!(write["x-protogate-connect"]["get"], false, "{write}");
    let watch = operation(&doc, "/v1/notes:watch", "get");
    assert_eq!(watch["x-protogate-connect"]["get"], false, "{watch}");
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(description.contains("x-protogate-connect"), "{description}");
}

#[test]
fn the_vps_document_describes_locdata() {
    let doc = document_for(&protogate::demo::vps_sources(), &JsonOptions::default());
    let op = operation(&doc, "/skvps/locdata", "post");
    let body = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/vpdata.VPData");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "vpresult.LocationService");
}

/// The Python that has the tools: `PROTOGATE_PYTHON` (set by `.ci/run`), else the venv
/// `ci/venv.sh` makes, else `python3`.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("PROTOGATE_PYTHON") {
        return path.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

/// Whether a Python module is importable; skips (with a message) or, under `CI=true`, fails.
fn python_module(module: &str, package: &str) -> bool {
    let found = Command::new(python())
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python module {module} ({package}) is missing under CI: .ci/run installs it \
             (bash ci/venv.sh)"
        );
        // Straight to the terminal: libtest would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: python module {module} ({package}) is not installed here \
             (bash ci/venv.sh installs it); CI installs it and runs this test"
        );
    }
    found
}

fn write_json(dir: &Path, name: &str, doc: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    path
}

/// Runs a command to completion within `limit`, returning whether it succeeded and its output.
fn run_bounded(command: &mut Command, limit: Duration) -> (bool, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        #[allow(clippy::disallowed_methods)] // a blocking thread polling a child process
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("timed out after {limit:?}\n{text}")),
    }
}

#[test]
fn vps_and_every_kind_validate_against_the_openapi_3_1_schema() {
    if !python_module("openapi_spec_validator", "openapi-spec-validator") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flags = JsonOptions {
        use_proto_names: true,
        int64_as_numbers: true,
        enums_as_ints: true,
        emit_unpopulated: false,
        ..JsonOptions::default()
    };
    let documents = [
        (
            "vps.json",
            document_for(&protogate::demo::vps_sources(), &JsonOptions::default()),
        ),
        ("kinds.json", kinds()),
        ("kinds-flags.json", document_for(&kinds_sources(), &flags)),
        (
            "library.json",
            document_for(&library_sources(), &JsonOptions::default()),
        ),
    ];
    for (name, doc) in documents {
        let path = write_json(dir.path(), name, &doc);
        let (ok, output) = run_bounded(
            Command::new(python())
                .args(["-m", "openapi_spec_validator"])
                .arg(&path),
            Duration::from_secs(120),
        );
        assert!(ok, "{name} is not a valid OpenAPI 3.1 document:\n{output}");
    }
}

/// A fully populated `Everything`: every field set, so responses exercise every schema.
fn everything() -> Value {
    serde_json::from_str(
        r#"{
        "f_double": "NaN", "f_float": 1.5, "f_int32": -3, "f_int64": "-9007199254740993",
        "f_uint32": 4000000000, "f_uint64": "18446744073709551615", "f_sint32": -7,
        "f_sint64": "-8", "f_fixed32": 9, "f_fixed64": "10", "f_sfixed32": -11,
        "f_sfixed64": "-12", "f_bool": true, "f_string": "text", "f_bytes": "AAEC/w==",
        "color": "RED", "nested": { "label": "n", "count": "2", "child": { "label": "c" } },
        "r_int64": ["1", "-2"], "r_nested": [{ "label": "a" }, {}], "r_color": ["BLUE", "RED"],
        "r_bytes": ["", "AA=="],
        "m_string_int64": { "a": "1", "b": "-2" }, "m_int32_nested": { "-1": { "label": "x" } },
        "m_bool_string": { "true": "yes", "false": "no" }, "m_uint64_color": { "5": "BLUE" },
        "m_string_bytes": { "k": "AQI=" },
        "c_nested": { "label": "chosen" }, "opt_int32": 0,
        "any": { "@type": "type.googleapis.com/kinds.v1.Nested", "label": "in any" },
        "duration": "-1.500s", "empty": {}, "field_mask": "fInt64,nested.label",
        "struct": { "k": [1, "two", null, { "x": true }] },
        "timestamp": "2024-02-29T12:00:00.123Z", "value": { "v": 1 },
        "list_value": [1, "a"], "null_value": null,
        "w_double": "Infinity", "w_float": 2.5, "w_int64": "64", "w_uint64": "65",
        "w_int32": 32, "w_uint32": 33, "w_bool": false, "w_string": "", "w_bytes": "Zm9v",
        "r_timestamp": ["1970-01-01T00:00:00Z"],
        "recursive": { "f_string": "inner" }, "old": "o", "renamed": "r"
    }"#,
    )
    .unwrap()
}

/// A backend for the kinds API: every method answers with [`everything`] (or an empty
/// message, or raw bytes for `HttpBody`); streams read all their input first.
async fn kinds_backend() -> Served {
    let pool = protogate::descriptor::load(&kinds_sources()).unwrap();
    let full = encode_json(&pool, "kinds.v1.Everything", everything());
    let http_body = encode_json(
        &pool,
        "google.api.HttpBody",
        json!({ "content_type": "application/octet-stream", "data": "AAEC" }),
    );
    let answer = move |path: &str| -> Bytes {
        match path {
            "/kinds.v1.Kinds/Upload" => http_body.clone(),
            "/kinds.v1.Kinds/Undelete" => Bytes::new(),
            _ => full.clone(),
        }
    };
    let unary_answer = answer.clone();
    let unary = backend::handler(move |call| {
        let message = unary_answer(&call.path);
        async move {
            Ok(Reply {
                message,
                metadata: Default::default(),
            })
        }
    });
    let streaming = backend::stream_handler(move |mut call: backend::StreamCall| {
        let message = answer(&call.path);
        async move {
            while let Some(item) = call.messages.next().await {
                item?;
            }
            // One message: a client stream has a unary answer, and an NDJSON body of one
            // line is also one JSON value, which response checks can read.
            let stream: backend::MessageStream =
                Box::pin(futures_util::stream::iter(vec![Ok(message)]));
            Ok((Default::default(), stream))
        }
    });
    let streams = vec![
        "/kinds.v1.Kinds/Watch".to_string(),
        "/kinds.v1.Kinds/Collect".to_string(),
    ];
    serve_handlers(Handlers {
        unary,
        streaming: Some((streams, streaming)),
    })
    .await
}

#[tokio::test]
async fn responses_from_a_populated_backend_are_what_the_document_says() {
    let backend = kinds_backend().await;
    let gw = start_gateway(kinds_sources(), &backend.url, Settings::default()).await;
    let served = get(&format!("{}/openapi.json", gw.base)).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let doc = served.json();
    let body = post_json(&format!("{}/v1/everything", gw.base), &json!({})).await;
    assert_eq!(body.status, 200);
    let out = body.json();
    // Every property the gateway wrote is documented, under the name it used.
    let properties = &schema(&doc, "kinds.v1.Everything")["properties"];
    for key in out.as_object().unwrap().keys() {
        assert!(properties.get(key).is_some(), "{key} is not documented");
    }
    assert_eq!(out["fInt64"], "-9007199254740993");
    assert_eq!(out["fDouble"], "NaN");
    assert_eq!(out["customName"], "r");
    assert!(
        out.get("cText").is_none(),
        "unset oneof members are omitted"
    );
}

/// What schemathesis finds that protogate does on purpose, each with its reason (and a row in
/// `docs/behaviour.md`): a failure is allowed when its report matches one of these.
const DELIBERATE: &[(&str, &str)] = &[
    (
        r"field already set for oneof",
        "two members of one oneof in a query string are refused, as grpc-gateway refuses \
         them; OpenAPI cannot say that query parameters exclude each other",
    ),
    (
        r#""field":"any"#,
        "an Any's fields depend on its @type, which must name a type the gateway loaded; \
         the document cannot tie the fields to the type",
    ),
    (
        r"(?s)Schema-violating request accepted.*-d '\s*' ",
        "a blank body is the empty message, as in grpc-gateway",
    ),
    (
        r"(?s)Schema-violating request accepted.*violates `enum`",
        "an enum value name the type does not have is dropped, as grpc-gateway's \
         DiscardUnknown drops it",
    ),
    (
        r"(?s)Schema-violating request accepted.*violates `type` at [^\n]*, became null\)",
        "`null` for a field is its default value, as proto3 JSON says and grpc-gateway reads \
         it; the document does not make every field nullable, since answers never hold it",
    ),
];

/// The failures of a schemathesis report that [`DELIBERATE`] does not explain.
fn unexplained(report: &str) -> Vec<String> {
    let deliberate: Vec<regex::Regex> = DELIBERATE
        .iter()
        .map(|(pattern, _)| regex::Regex::new(pattern).unwrap())
        .collect();
    let body = report.split("Failures:").next().unwrap_or(report);
    body.split("\n___")
        .skip(1)
        .filter(|section| !deliberate.iter().any(|d| d.is_match(section)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_deliberate_findings_are_told_apart() {
    let report = "x\n___ GET /a ___\n[400] `{\"message\":\"field already set for oneof\"}`\n\
                  ___ POST /b ___\n- ST202 Schema-valid request rejected\n[400] other\n\
                  Failures:\n";
    let left = unexplained(report);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("POST /b"));

    let null = "x\n___ POST /c ___\n- ST201 Schema-violating request accepted\n\
                Invalid component: in body - violates `type` at /properties/customName \
                (was string, became null)\n[200] OK\n\
                ___ POST /d ___\n- ST201 Schema-violating request accepted\n\
                Invalid component: in body - violates `type` at /properties/fInt32 \
                (was integer, became string)\n[200] OK\nFailures:\n";
    let left = unexplained(null);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contains("POST /d"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_requests_built_from_the_document_pass_against_the_gateway() {
    if !python_module("schemathesis", "schemathesis") {
        return;
    }
    let backend = kinds_backend().await;
    let gw = start_gateway(kinds_sources(), &backend.url, Settings::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let doc = get(&format!("{}/openapi.json", gw.base)).await.json();
    let path = write_json(dir.path(), "kinds.json", &doc);
    let base = gw.base.clone();
    let report = dir.path().join("report");
    let work = dir.path().to_path_buf();
    let (_, output) = tokio::task::spawn_blocking(move || {
        run_bounded(
            Command::new(python())
                .args(["-m", "schemathesis.cli", "--no-color", "run"])
                .arg(&path)
                .args(["--url", &base])
                // Every check: server errors, response and status conformance, and requests
                // the schema allows that are refused (or the reverse).
                .args(["--checks", "all"])
                // The coverage phase trips over recursive schemas inside hypothesis itself.
                .args(["--phases", "examples,fuzzing"])
                .args(["--suppress-health-check", "filter_too_much,too_slow"])
                // A fixed number of examples from a fixed seed, and no time limit: with
                // `--max-time` it fuzzes until the time is up, so a slower machine tried other
                // inputs than a faster one and could find what the other never saw.
                .args(["--max-examples", "50", "--seed", "1"])
                .args(["--request-timeout", "10"])
                // One worker: hypothesis's cache of strategy descriptions is not thread-safe
                // ("dictionary changed size during iteration" with two).
                .args(["--workers", "1"])
                .arg("--report-dir")
                .arg(&report)
                // Its caches (.hypothesis, .schemathesis) go in the temporary directory.
                .current_dir(&work)
                .env("SCHEMATHESIS_HOOKS", "")
                .env("NO_COLOR", "1"),
            Duration::from_secs(400),
        )
    })
    .await
    .unwrap();
    assert!(
        output.contains("generated"),
        "schemathesis did not run:\n{output}"
    );
    let left = unexplained(&output);
    assert!(
        left.is_empty(),
        "schemathesis found what docs/behaviour.md does not list as deliberate:\n{}",
        left.join("\n___")
    );
}

#[tokio::test]
async fn the_gateway_serves_the_document_the_command_writes_and_the_page() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let gw = start_gateway(kinds_sources(), &backend.url, Settings::default()).await;
    let served = get(&format!("{}/openapi.json", gw.base)).await;
    let output = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .current_dir(repo_path(""))
        .args([
            "openapi",
            "--proto",
            "kinds/v1/kinds.proto",
            "-I",
            "tests/protos",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let written: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(served.json(), written);

    let page = get(&format!("{}/docs", gw.base)).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(html.contains("\"/v1/everything\""));
    let asset = std::fs::read_to_string(repo_path("assets/docs.html")).unwrap();
    for external in ["http://", "https://", "src=\"//", "href=\"//", "url(//"] {
        assert!(!asset.contains(external), "the page refers to {external}");
    }
    let head = send("HEAD", &format!("{}/openapi.json", gw.base), &[], "").await;
    assert_eq!(head.status, 200);
    let metrics = get(&format!("{}/metrics", gw.base)).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains(r#"http_route="/openapi.json""#), "{text}");
}

#[tokio::test]
async fn comments_that_look_like_markup_cannot_break_out_of_the_page() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.proto"),
        "syntax = \"proto3\"; package x; import \"google/api/annotations.proto\";\n\
         // </script><script>alert(1)</script> & more\n\
         service S { rpc M(E) returns (E) { option (google.api.http) = { get: \"/x\" }; } }\n\
         message E {}\n",
    )
    .unwrap();
    let sources = Sources {
        protos: vec!["x.proto".into()],
        includes: vec![dir.path().to_path_buf()],
        ..Sources::default()
    };
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let gw = start_gateway(sources, &backend.url, Settings::default()).await;
    let doc = get(&format!("{}/openapi.json", gw.base)).await.json();
    assert!(doc["tags"][0]["description"]
        .as_str()
        .unwrap()
        .contains("</script>"));
    let html = String::from_utf8(get(&format!("{}/docs", gw.base)).await.body.to_vec()).unwrap();
    assert!(!html.contains("</script><script>alert"));
    assert!(html.contains("\\u003c/script\\u003e"));
}

#[tokio::test]
async fn paths_can_move_or_be_turned_off_and_stay_on_the_serving_port() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let settings = Settings {
        docs: DocsSettings::from_paths("/api/openapi.json", "").unwrap(),
        admin_on_main_port: false,
        ..Settings::default()
    };
    let gw = start_gateway(kinds_sources(), &backend.url, settings).await;
    assert_eq!(get(&format!("{}/openapi.json", gw.base)).await.status, 404);
    assert_eq!(get(&format!("{}/docs", gw.base)).await.status, 404);
    let moved = get(&format!("{}/api/openapi.json", gw.base)).await;
    assert_eq!(moved.status, 200, "on the serving port with --admin-listen");
    assert_eq!(moved.json()["openapi"], "3.1.0");
    assert!(DocsSettings::from_paths("openapi.json", "/docs").is_err());

    // With CORS on, tools on allowed origins may read the document.
    let settings = Settings {
        cors: protogate::server::CorsPolicy::from_origins(&["https://tools.example".into()])
            .unwrap(),
        ..Settings::default()
    };
    let gw = start_gateway(kinds_sources(), &backend.url, settings).await;
    let url = format!("{}/openapi.json", gw.base);
    let read = send("GET", &url, &[("origin", "https://tools.example")], "").await;
    assert_eq!(
        read.header("access-control-allow-origin"),
        Some("https://tools.example")
    );
    assert!(DocsSettings::from_paths("/same", "/same").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.binpb");
    std::fs::write(&path, protogate::demo::VPS_DESCRIPTORS).unwrap();
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let source = protogate::reload::ReloadSource {
        sources: Sources {
            descriptor_sets: vec![path.clone()],
            ..Sources::default()
        },
        options: Default::default(),
        upstreams: protogate::snapshot::UpstreamMap {
            by_service: Default::default(),
            default: Some(0),
        },
    };
    let options = protogate::upstream::UpstreamOptions::default();
    let (upstreams, _) = protogate::upstream::build_all(Some(&backend.url), &[], &options).unwrap();
    let gateway =
        protogate::server::Gateway::new(source.build().unwrap(), upstreams, Settings::default());
    let gw = start_with(gateway.clone()).await;
    let before = get(&format!("{}/openapi.json", gw.base)).await.json();
    assert!(before["paths"]["/skvps/locdata"].is_object());

    let library = protogate::descriptor::compile(
        &[repo_path("tests/protos")],
        &["testapi/v1/library.proto".into()],
        true,
    )
    .unwrap();
    std::fs::write(&path, library).unwrap();
    assert!(matches!(
        protogate::reload::reload(&gateway, &source).await,
        protogate::reload::Outcome::Swapped { .. }
    ));
    let after = get(&format!("{}/openapi.json", gw.base)).await.json();
    assert!(after["paths"]["/skvps/locdata"].is_null());
    assert!(after["paths"]["/v2/books/{name}"].is_object());
    assert_ne!(before["info"]["version"], after["info"]["version"]);
}
