//! The OpenAPI 3.1 description of what a snapshot serves: one operation per binding
//! (additional bindings included), path and query parameters, request and response bodies,
//! `google.rpc.Status` errors, and component schemas that follow the proto3 JSON mapping
//! exactly as the gateway writes it under the current flags. Proto comments become
//! descriptions where the descriptors carry source info.
//!
//! Pure: it reads the snapshot and the JSON options and touches nothing else, so the served
//! `/openapi.json` and `protogate openapi` are the same document.
//!
//! What OpenAPI cannot say exactly, and how it is said instead:
//! - A multi-segment variable (`{name=shelves/*/books/*}`, `{path=**}`) is one path parameter
//!   with a `pattern`, whose slashes are part of the value (grpc-gateway's openapiv2 does the
//!   same); a verb is appended literally (`/v1/{name}:undelete`).
//! - Methods OpenAPI 3.1 has no slot for (`custom { kind: "SEARCH" }`) go under the path
//!   item's `x-additionalOperations` (the shape OpenAPI 3.2 gives them); `custom { kind: "*" }`
//!   is documented under each of GET, PUT, POST, DELETE and PATCH not bound otherwise.
//! - Two bindings that become the same OpenAPI path and method: the first is the operation,
//!   and its description names the others.
//! - Streams are documented in the response description (NDJSON lines or Server-Sent Events).

mod comments;
mod paths;
mod rules;
mod schema;

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::route::{MethodSel, RoutePlan};
use crate::snapshot::Snapshot;
use crate::transcode::JsonOptions;

use comments::Comments;
use paths::Paths;
use schema::Schemas;

/// The OpenAPI 3.1 document for the routes `snapshot` serves, with JSON as `json` writes it.
pub fn document(snapshot: &Snapshot, json: &JsonOptions) -> Value {
    let comments = Comments::new(&snapshot.pool);
    let mut schemas = Schemas::new(json, &comments);
    let mut plans: Vec<&RoutePlan> = snapshot.routes.plans().map(|p| &**p).collect();
    plans.sort_by_key(|p| sort_key(p));
    let mut paths = Paths::default();
    for plan in &plans {
        paths.reserve(plan);
    }
    // Bindings of one method first, so `custom *` only takes the methods left free.
    let (any, specific): (Vec<&RoutePlan>, Vec<&RoutePlan>) = plans
        .iter()
        .partition(|p| matches!(p.rule.method, MethodSel::Any));
    for plan in specific.into_iter().chain(any) {
        paths.add(plan, &mut schemas);
    }
    if let Some(status) = snapshot.pool.get_message_by_name("google.rpc.Status") {
        schemas.message_ref(&status);
    }
    let services: BTreeSet<String> = plans
        .iter()
        .map(|p| p.method.parent_service().full_name().to_string())
        .collect();
    let tags: Vec<Value> = services
        .iter()
        .map(|name| {
            let mut tag = json!({ "name": name });
            let service = snapshot.pool.get_service_by_name(name);
            if let Some(text) = service.as_ref().and_then(|s| comments.service(s)) {
                tag["description"] = text.into();
            }
            tag
        })
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": title(&services),
            "version": fingerprint(snapshot, json),
            "description": description(json),
        },
        "tags": tags,
        "paths": paths.into_value(),
        "components": { "schemas": schemas.into_components() },
    })
}

fn sort_key(plan: &RoutePlan) -> (String, String, String) {
    let method = match &plan.rule.method {
        MethodSel::Any => "*".to_string(),
        MethodSel::Method(m) => m.to_string(),
    };
    (
        plan.rule.path.clone(),
        method,
        plan.method.full_name().to_string(),
    )
}

fn title(services: &BTreeSet<String>) -> String {
    match services.len() {
        0 => "No routes loaded".to_string(),
        1..=3 => services.iter().cloned().collect::<Vec<_>>().join(", "),
        n => format!("{n} services"),
    }
}

/// Changes whenever the descriptors or the JSON flags do, so clients can tell documents apart.
fn fingerprint(snapshot: &Snapshot, json: &JsonOptions) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let flags = format!(
        "{}{}{}{}",
        json.use_proto_names, json.emit_unpopulated, json.enums_as_ints, json.int64_as_numbers
    );
    let pool = snapshot.pool.encode_to_vec();
    for byte in pool.iter().chain(flags.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn description(json: &JsonOptions) -> String {
    let names = match json.use_proto_names {
        true => {
            "field names as in the .proto files (requests may also use the lowerCamel JSON names)"
        }
        false => "lowerCamel field names (requests may also use the names in the .proto files)",
    };
    let int64 = match json.int64_as_numbers {
        true => "64-bit integers as numbers",
        false => "64-bit integers as strings",
    };
    let enums = match json.enums_as_ints {
        true => "enums as numbers",
        false => "enums as their names",
    };
    let unpopulated = match json.emit_unpopulated {
        true => {
            "fields holding their default value written (unset message fields as `null`; \
                 oneof members that are not set omitted)"
        }
        false => "fields holding their default value omitted",
    };
    let unknown = match json.reject_unknown_fields {
        true => "unknown request fields are rejected",
        false => "unknown request fields are ignored",
    };
    format!(
        "The REST API protogate serves for the gRPC services it has loaded, generated from \
         their descriptors and google.api.http rules; it changes when they are reloaded.\n\n\
         JSON follows the proto3 JSON mapping: {names}, {int64}, {enums}, bytes as base64, \
         well-known types in their JSON forms; {unpopulated}; {unknown}. Every error is a \
         `google.rpc.Status`.\n\n\
         The same port serves every method to gRPC, gRPC-Web and Connect clients at its own \
         path, `/package.Service/Method` (each operation's `x-grpc-method`); \
         `x-protogate-connect` gives that path and whether a Connect `GET` may call it. \
         Streaming operations are also served over WebSocket (`x-protogate-websocket`)."
    )
}
