//! One OpenAPI operation per binding: the path template as an OpenAPI path, its variables as
//! path parameters, the unbound fields as query parameters, the request body, and the
//! responses (the message or `response_body`, streams, `HttpBody`, and `google.rpc.Status`).

use crate::well_known::{well_known, WellKnown};
use std::collections::{BTreeMap, HashMap, HashSet};

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value as ProtoValue};
use serde_json::{json, Map, Value};

use super::schema::{settable_from_text, Schemas};
use crate::descriptor::is_side_effect_free;
use crate::route::template::Segment;
use crate::route::{BodyPlan, FieldPath, HttpRule, MethodSel, RoutePlan};

/// How deep query parameters follow singular message fields (`filter.author.name` is 3).
const MAX_QUERY_DEPTH: usize = 4;
/// The HTTP methods an OpenAPI 3.1 path item has a slot for.
const STANDARD: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// What a `custom { kind: "*" }` binding is documented as: each of these not bound otherwise.
const ANY_METHOD: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// The paths object being built.
#[derive(Default)]
pub(super) struct Paths {
    items: BTreeMap<String, Map<String, Value>>,
    /// For each path shape (variable names erased): the OpenAPI path and its parameter names.
    /// OpenAPI forbids two paths that differ only in parameter names.
    shapes: HashMap<String, (String, Vec<String>)>,
    operation_ids: HashSet<String>,
}

/// A parameter of the OpenAPI path.
enum PathParam {
    /// A template variable bound to a field; multi-segment ones carry their regex and text.
    Field {
        path: FieldPath,
        multi: Option<(String, String)>,
    },
    /// A `*` or `**` outside any variable: matched, but bound to nothing.
    Wildcard { rest: bool },
}

struct Rendered {
    key: String,
    shape: String,
    names: Vec<String>,
    params: Vec<PathParam>,
}

impl Paths {
    pub(super) fn into_value(self) -> Value {
        let items = self.items.into_iter().map(|(k, v)| (k, Value::Object(v)));
        Value::Object(items.collect())
    }

    /// Chooses the parameter names of each path shape before any binding is added: of the
    /// bindings sharing a shape, the one with the simplest names (fewest dots) names it.
    pub(super) fn reserve(&mut self, plan: &RoutePlan) {
        let rendered = render(plan);
        let simplicity = |names: &[String]| {
            let dots: usize = names.iter().map(|n| n.matches('.').count()).sum();
            (dots, names.to_vec())
        };
        match self.shapes.get_mut(&rendered.shape) {
            Some(existing) if simplicity(&rendered.names) < simplicity(&existing.1) => {
                *existing = (rendered.key, rendered.names);
            }
            Some(_) => {}
            None => {
                self.shapes
                    .insert(rendered.shape, (rendered.key, rendered.names));
            }
        }
    }

    /// Adds the operations of one binding ([`Paths::reserve`]d before).
    pub(super) fn add(&mut self, plan: &RoutePlan, schemas: &mut Schemas<'_>) {
        let rendered = render(plan);
        let (key, names) = self
            .shapes
            .entry(rendered.shape.clone())
            .or_insert_with(|| (rendered.key.clone(), rendered.names.clone()))
            .clone();
        let item = self.items.entry(key.clone()).or_default();
        let slots: Vec<(String, bool)> = match &plan.rule.method {
            MethodSel::Method(m) => {
                let lower = m.as_str().to_ascii_lowercase();
                match STANDARD.contains(&lower.as_str()) {
                    true => vec![(lower, false)],
                    false => vec![(m.as_str().to_string(), true)],
                }
            }
            MethodSel::Any => ANY_METHOD
                .iter()
                .filter(|m| !item.contains_key(**m))
                .map(|m| (m.to_string(), false))
                .collect(),
        };
        let expanded = matches!(plan.rule.method, MethodSel::Any);
        for (slot, custom) in slots {
            let suffix = expanded.then_some(slot.as_str());
            let id = unique_id(&mut self.operation_ids, operation_id(plan, suffix));
            let operation = operation(plan, schemas, &names, &rendered.params, id);
            let item = self.items.entry(key.clone()).or_default();
            // OpenAPI 3.1 has no slot for other methods; 3.2's `additionalOperations`
            // holds them, so the same shape goes under its extension name.
            let extension = custom.then(|| {
                item.entry("x-additionalOperations")
                    .or_insert_with(|| json!({}))
            });
            let target = match extension.and_then(Value::as_object_mut) {
                Some(extension) => extension,
                None if custom => continue,
                None => item,
            };
            match target.get_mut(&slot) {
                None => {
                    target.insert(slot, operation);
                }
                Some(existing) => note_shadowed(existing, plan),
            }
        }
    }
}

/// Two bindings whose OpenAPI paths and methods coincide (`GET /v1/{name=shelves/*}` and
/// `GET /v1/{name=authors/*}`): the first is the operation, the others are named in it.
fn note_shadowed(existing: &mut Value, plan: &RoutePlan) {
    let note = format!(
        "This OpenAPI path and method also serve `{}` (gRPC `{}`), which OpenAPI cannot \
         describe as a separate operation.",
        plan.label,
        plan.method_name()
    );
    let text = match existing["description"].as_str() {
        Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
        _ => note,
    };
    existing["description"] = text.into();
}

/// `Library_GetBook`, `Library_GetBook2` for the first additional binding (grpc-gateway's
/// openapiv2 names), with the method for an expanded `custom *` binding.
fn operation_id(plan: &RoutePlan, method: Option<&str>) -> String {
    let service = plan.method.parent_service().name().to_string();
    let mut id = format!("{service}_{}", plan.method.name());
    let index = binding_index(plan);
    if index > 0 {
        id.push_str(&(index + 1).to_string());
    }
    if let Some(m) = method {
        id.push('_');
        id.push_str(m);
    }
    id
}

fn unique_id(taken: &mut HashSet<String>, id: String) -> String {
    let mut candidate = id.clone();
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{id}_{n}");
    }
    candidate
}

/// Which binding of its method `plan` is: 0 for the rule itself, `i + 1` for
/// `additional_bindings[i]`.
fn binding_index(plan: &RoutePlan) -> usize {
    let pool = plan.method.parent_pool();
    let Some(http) = pool.get_extension_by_name("google.api.http") else {
        return 0;
    };
    let options = plan.method.options();
    if !options.has_extension(&http) {
        return 0;
    }
    let value = options.get_extension(&http);
    let Some(rule) = value.as_message() else {
        return 0;
    };
    let extra = rule.get_field_by_name("additional_bindings");
    let Some(ProtoValue::List(extra)) = extra.as_deref() else {
        return 0;
    };
    if same_binding(rule, &plan.rule) {
        return 0;
    }
    extra
        .iter()
        .position(|b| b.as_message().is_some_and(|m| same_binding(m, &plan.rule)))
        .map_or(0, |i| i + 1)
}

fn same_binding(binding: &DynamicMessage, rule: &HttpRule) -> bool {
    let text = |m: &DynamicMessage, name: &str| {
        m.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let method = match &rule.method {
        MethodSel::Any => "*".to_string(),
        MethodSel::Method(m) => m.as_str().to_string(),
    };
    let pattern = ["get", "put", "post", "delete", "patch"]
        .into_iter()
        .find(|name| binding.has_field_by_name(name))
        .map(|name| (name.to_ascii_uppercase(), text(binding, name)))
        .or_else(|| {
            let custom = binding.get_field_by_name("custom")?;
            let custom = custom.as_message()?;
            Some((text(custom, "kind"), text(custom, "path")))
        });
    pattern == Some((method, rule.path.clone()))
        && text(binding, "body") == rule.body
        && text(binding, "response_body") == rule.response_body
}

/// The template as an OpenAPI path: variables as `{field.path}`, a multi-segment variable as
/// one parameter, `*` and `**` outside variables as `{_wildcardN}`, the verb appended.
fn render(plan: &RoutePlan) -> Rendered {
    let t = &plan.template;
    let mut key = String::new();
    let mut shape = String::new();
    let mut names = Vec::new();
    let mut params = Vec::new();
    let mut variables = t.variables.iter().zip(&plan.path_vars).peekable();
    let mut i = 0;
    while let Some(segment) = t.segments.get(i) {
        key.push('/');
        shape.push('/');
        if let Some((v, path)) = variables.next_if(|(v, _)| v.start == i) {
            let segments = t.segments.get(v.start..v.end).unwrap_or_default();
            let multi = (!v.is_single_segment(t))
                .then(|| (segments_regex(segments), segments_text(segments)));
            names.push(v.dotted());
            params.push(PathParam::Field {
                path: path.clone(),
                multi,
            });
            key.push_str(&format!("{{{}}}", v.dotted()));
            shape.push_str("{}");
            i = v.end.max(i + 1);
            continue;
        }
        match segment {
            Segment::Literal(text) => {
                key.push_str(text);
                shape.push_str(text);
            }
            Segment::Wildcard | Segment::DoubleWildcard => {
                let name = format!("_wildcard{}", params.len() + 1);
                key.push_str(&format!("{{{name}}}"));
                shape.push_str("{}");
                names.push(name);
                params.push(PathParam::Wildcard {
                    rest: *segment == Segment::DoubleWildcard,
                });
            }
        }
        i += 1;
    }
    if key.is_empty() {
        key.push('/');
        shape.push('/');
    }
    if let Some(verb) = &t.verb {
        key.push(':');
        key.push_str(verb);
        shape.push(':');
        shape.push_str(verb);
    }
    Rendered {
        key,
        shape,
        names,
        params,
    }
}

fn segments_text(segments: &[Segment]) -> String {
    let parts: Vec<&str> = segments
        .iter()
        .map(|s| match s {
            Segment::Literal(t) => t.as_str(),
            Segment::Wildcard => "*",
            Segment::DoubleWildcard => "**",
        })
        .collect();
    parts.join("/")
}

/// An ECMA-262 regex for the value of a multi-segment variable.
fn segments_regex(segments: &[Segment]) -> String {
    let mut out = String::from("^");
    for (i, segment) in segments.iter().enumerate() {
        match segment {
            Segment::DoubleWildcard if i == 0 => out.push_str("(?:[^/]+(?:/[^/]+)*)?"),
            Segment::DoubleWildcard => out.push_str("(?:/[^/]+)*"),
            Segment::Wildcard | Segment::Literal(_) => {
                if i > 0 {
                    out.push('/');
                }
                match segment {
                    Segment::Literal(text) => out.push_str(&regex_escape(text)),
                    _ => out.push_str("[^/]+"),
                }
            }
        }
    }
    out.push('$');
    out
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn operation(
    plan: &RoutePlan,
    schemas: &mut Schemas<'_>,
    names: &[String],
    params: &[PathParam],
    id: String,
) -> Value {
    let comment = schemas.comments().method(&plan.method);
    let (summary, rest) = split_summary(comment);
    let mut notes: Vec<String> = Vec::new();
    if let Some(rest) = rest {
        notes.push(rest);
    }
    notes.push(format!(
        "gRPC method `{}`{}; rule `{}`.",
        plan.grpc_path,
        streaming_kind(plan).map_or(String::new(), |k| format!(" ({k} streaming)")),
        plan.rule
    ));
    if streaming_kind(plan).is_some() {
        notes.push(WEBSOCKET_NOTE.into());
    }
    let mut parameters: Vec<Value> = params
        .iter()
        .zip(names)
        .map(|(p, name)| path_parameter(name, p, schemas))
        .collect();
    if !matches!(plan.body, BodyPlan::Message) {
        query_parameters(plan, schemas, &mut parameters);
    }
    let mut op = Map::new();
    op.insert("operationId".into(), id.into());
    op.insert(
        "tags".into(),
        json!([plan.method.parent_service().full_name()]),
    );
    op.insert(
        "summary".into(),
        summary
            .unwrap_or_else(|| plan.method.name().to_string())
            .into(),
    );
    op.insert("description".into(), notes.join("\n\n").into());
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = request_body(plan, schemas) {
        op.insert("requestBody".into(), body);
    }
    op.insert("responses".into(), responses(plan, schemas));
    let deprecated = plan.method.method_descriptor_proto().options.as_ref();
    if deprecated.is_some_and(|o| o.deprecated()) {
        op.insert("deprecated".into(), true.into());
    }
    op.insert("x-grpc-method".into(), plan.grpc_path.as_str().into());
    op.insert("x-protogate-connect".into(), connect_mark(plan));
    if streaming_kind(plan).is_some() {
        op.insert("x-protogate-websocket".into(), true.into());
    }
    Value::Object(op)
}

/// How a streaming operation is also served (`x-protogate-websocket: true` marks it).
const WEBSOCKET_NOTE: &str = "Also served over WebSocket: a `GET` upgrade (or HTTP/2 extended \
    `CONNECT`) to this path, whatever the operation's method. Each text frame is one request \
    message as JSON (as this operation's body; path and query parameters apply to every \
    message), each binary frame its protobuf wire bytes. Each response message comes back as \
    `{\"result\": ...}` in a text frame (wire bytes in a binary frame to a client whose last \
    frame was binary). The client's Close ends its request stream; the gateway closes with \
    1000 when the call succeeds, or sends `{\"error\": status}` and closes with 4000 + the \
    gRPC code.";

/// How the method is also served over the Connect protocol: its path, and whether a `GET`
/// may call it (unary methods marked `NO_SIDE_EFFECTS`).
fn connect_mark(plan: &RoutePlan) -> Value {
    let get = streaming_kind(plan).is_none() && is_side_effect_free(&plan.method);
    json!({ "path": plan.grpc_path.as_str(), "get": get })
}

fn streaming_kind(plan: &RoutePlan) -> Option<&'static str> {
    match (
        plan.method.is_client_streaming(),
        plan.method.is_server_streaming(),
    ) {
        (false, false) => None,
        (true, false) => Some("client"),
        (false, true) => Some("server"),
        (true, true) => Some("bidirectional"),
    }
}

/// The first paragraph of a comment as the summary (on one line), the rest as description.
fn split_summary(comment: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(comment) = comment else {
        return (None, None);
    };
    let (first, rest) = comment.split_once("\n\n").unwrap_or((comment, ""));
    let summary = first.split_whitespace().collect::<Vec<_>>().join(" ");
    let rest = rest.trim();
    (Some(summary), (!rest.is_empty()).then(|| rest.to_string()))
}

fn path_parameter(name: &str, param: &PathParam, schemas: &mut Schemas<'_>) -> Value {
    let mut parameter = json!({ "name": name, "in": "path", "required": true });
    let mut notes: Vec<String> = Vec::new();
    let schema = match param {
        PathParam::Field { path, multi } => {
            if path.text != name {
                notes.push(format!("Binds the field `{}`.", path.text));
            }
            if let Some(text) = schemas.describe_field(path.leaf()) {
                notes.push(text);
            }
            match multi {
                Some((regex, text)) => {
                    notes.push(format!(
                        "Matches `{text}`: the value spans path segments, and its slashes \
                         are part of it: send them as `/`, not escaped as `%2F` (which many \
                         OpenAPI clients do by default)."
                    ));
                    json!({ "type": "string", "pattern": regex })
                }
                None => {
                    let mut schema = schemas
                        .parameter(path.leaf())
                        .unwrap_or_else(|| json!({ "type": "string" }));
                    if schema["type"] == "string" && schema.get("enum").is_none() {
                        schema["minLength"] = 1.into();
                    }
                    if schema["type"] == "array" {
                        parameter["style"] = "simple".into();
                        parameter["explode"] = false.into();
                        notes.push("Items are separated by commas.".into());
                    }
                    schema
                }
            }
        }
        PathParam::Wildcard { rest: false } => {
            notes.push("Any one path segment; it is not bound to a field.".into());
            json!({ "type": "string", "minLength": 1 })
        }
        PathParam::Wildcard { rest: true } => {
            notes.push(
                "The rest of the path, slashes included (sent as `/`); it is not bound to \
                 a field."
                    .into(),
            );
            json!({ "type": "string" })
        }
    };
    parameter["schema"] = schema;
    if !notes.is_empty() {
        parameter["description"] = notes.join("\n\n").into();
    }
    parameter
}

/// The request fields neither the path nor the body binds, by dotted path, down to
/// [`MAX_QUERY_DEPTH`] and never into a message already on the way (recursive types).
fn query_parameters(plan: &RoutePlan, schemas: &mut Schemas<'_>, out: &mut Vec<Value>) {
    let mut walk = QueryWalk {
        bound: &plan.bound,
        names: Vec::new(),
        numbers: Vec::new(),
        chain: vec![plan.input.full_name().to_string()],
        out,
    };
    walk.message(&plan.input, schemas);
}

struct QueryWalk<'a> {
    bound: &'a [Vec<u32>],
    names: Vec<String>,
    numbers: Vec<u32>,
    chain: Vec<String>,
    out: &'a mut Vec<Value>,
}

impl QueryWalk<'_> {
    fn message(&mut self, message: &MessageDescriptor, schemas: &mut Schemas<'_>) {
        for field in message.fields() {
            self.numbers.push(field.number());
            self.names.push(schemas.field_name(&field).to_string());
            if !self.bound.iter().any(|b| overlaps(b, &self.numbers)) {
                self.field(&field, schemas);
            }
            self.numbers.pop();
            self.names.pop();
        }
    }

    fn field(&mut self, field: &prost_reflect::FieldDescriptor, schemas: &mut Schemas<'_>) {
        let name = self.names.join(".");
        let description = schemas.describe_field(field);
        let mut parameter = json!({ "name": name, "in": "query", "required": false });
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return;
            };
            let value = entry.map_entry_value_field();
            let Some(schema) = schemas.parameter(&value) else {
                return;
            };
            parameter["style"] = "deepObject".into();
            parameter["explode"] = true.into();
            parameter["schema"] = json!({ "type": "object", "additionalProperties": schema });
            let note = format!("Entries are sent as `{name}[key]=value`.");
            parameter["description"] = join(description, note).into();
            self.out.push(parameter);
            return;
        }
        match field.kind() {
            Kind::Message(m) if !settable_from_text(&field.kind()) => {
                let deeper = !field.is_list()
                    && self.names.len() < MAX_QUERY_DEPTH
                    && !self.chain.iter().any(|c| c == m.full_name());
                if deeper {
                    self.chain.push(m.full_name().to_string());
                    self.message(&m, schemas);
                    self.chain.pop();
                }
            }
            _ => {
                let Some(schema) = schemas.parameter(field) else {
                    return;
                };
                if schema["type"] == "array" {
                    parameter["style"] = "form".into();
                    parameter["explode"] = true.into();
                }
                parameter["schema"] = schema;
                if let Some(text) = description {
                    parameter["description"] = text.into();
                }
                self.out.push(parameter);
            }
        }
    }
}

fn join(first: Option<String>, second: String) -> String {
    match first {
        Some(f) => format!("{f}\n\n{second}"),
        None => second,
    }
}

/// A query path is skipped when it and a bound path share a prefix (one contains the other),
/// as the request parser does.
fn overlaps(bound: &[u32], path: &[u32]) -> bool {
    let n = bound.len().min(path.len());
    bound[..n] == path[..n]
}

const STREAM_BODY: &str = "A stream of request messages: JSON values one after another \
    (concatenated or newline-delimited), each sent upstream as soon as it is complete.";

fn request_body(plan: &RoutePlan, schemas: &mut Schemas<'_>) -> Option<Value> {
    let client_stream = plan.method.is_client_streaming();
    let (schema, mut description) = match &plan.body {
        BodyPlan::None => return None,
        BodyPlan::Message if plan.http_body_request => {
            return Some(json!({
                "description": "The raw request bytes; their `Content-Type` is passed on \
                    as the `google.api.HttpBody` content type.",
                "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } },
                "required": client_stream,
            }));
        }
        BodyPlan::Message => {
            let text = match plan.path_vars.is_empty() {
                true => format!("The whole `{}` message.", plan.input.full_name()),
                false => format!(
                    "The whole `{}` message; fields bound by the path take the path's values.",
                    plan.input.full_name()
                ),
            };
            (schemas.message_ref(&plan.input), text)
        }
        BodyPlan::Field(path) => {
            let schema = schemas.field_value(path.leaf(), false);
            let text = format!("The `{}` field of `{}`.", path.text, plan.input.full_name());
            (schema, text)
        }
    };
    if client_stream {
        description = format!("{description} {STREAM_BODY}");
    }
    Some(json!({
        "description": description,
        "content": { "application/json": { "schema": schema } },
        "required": client_stream,
    }))
}

fn responses(plan: &RoutePlan, schemas: &mut Schemas<'_>) -> Value {
    let status = status_ref(&plan.output, schemas);
    let error = json!({
        "description": "An error: a `google.rpc.Status` with the gRPC code, a message, and \
            the upstream's error details; the HTTP status follows the standard gRPC mapping.",
        "content": { "application/json": { "schema": status.clone() } },
    });
    let stream = plan.method.is_server_streaming();
    let ok = if plan.http_body_response {
        let text = match stream {
            true => {
                "The raw `data` of each `google.api.HttpBody` message, one after another, \
                     with the first message's content type."
            }
            false => "The raw `data` of the `google.api.HttpBody`, with its content type.",
        };
        json!({
            "description": text,
            "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } },
        })
    } else {
        let (schema, what) = match &plan.response_body {
            Some(path) => {
                // `response_body` writes an unset message field as `null` whatever the flags.
                let leaf = path.leaf();
                let nullable = matches!(leaf.kind(), Kind::Message(m)
                    if !matches!(well_known(&m), Some(WellKnown::Value)))
                    && !leaf.is_list()
                    && !leaf.is_map();
                let schema = schemas.field_value(leaf, nullable);
                let what = format!(
                    "The `{}` field of `{}`.",
                    path.text,
                    plan.output.full_name()
                );
                (schema, what)
            }
            None => (
                schemas.message_ref(&plan.output),
                format!("A `{}` message.", plan.output.full_name()),
            ),
        };
        match stream {
            false => json!({
                "description": what,
                "content": { "application/json": { "schema": schema } },
            }),
            true => json!({
                "description": format!(
                    "A stream of messages, each written as it arrives. {what} By default \
                     newline-delimited JSON: one `{{\"result\": message}}` line per message, \
                     and a failure after the first message ends the stream with an \
                     `{{\"error\": status}}` line. With `Accept: text/event-stream`, \
                     Server-Sent Events: `data: message` per message, `event: error` with \
                     the status on failure."
                ),
                "content": {
                    "application/json": { "schema": {
                        "type": "object",
                        "description": "One line of the stream.",
                        "properties": { "result": schema, "error": status },
                    } },
                    "text/event-stream": { "schema": { "type": "string" } },
                },
            }),
        }
    };
    json!({ "200": ok, "default": error })
}

fn status_ref(any: &MessageDescriptor, schemas: &mut Schemas<'_>) -> Value {
    match any.parent_pool().get_message_by_name("google.rpc.Status") {
        Some(status) => schemas.message_ref(&status),
        None => json!({
            "type": "object",
            "properties": {
                "code": { "type": "integer" },
                "message": { "type": "string" },
                "details": { "type": "array", "items": { "type": "object" } },
            },
        }),
    }
}
