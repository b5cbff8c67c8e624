//! Request assembly: the body first, then path variables (which overwrite it), then the query
//! string for fields neither of them bound; the result encoded as one gRPC frame.

use bytes::Bytes;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

use super::body::{self, BodyFormat, FormPart};
use super::json_error::{check_depth, json_error};
use super::json_to_message::parse_message;
use super::options::JsonOptions;
use super::query::{self, parent_mut};
use super::scalar;
use super::schemas::Schemas;
use crate::error::GatewayError;
use crate::grpc::frame::{self, Outgoing};
use crate::route::{BodyPlan, FieldPath, RoutePlan};
use crate::well_known::{in_protobuf_package, well_known, WellKnown};

/// What a REST request brings.
#[derive(Debug, Clone, Copy)]
pub struct RequestInput<'a> {
    pub body: &'a Bytes,
    pub content_type: Option<&'a str>,
    /// Decoded path variable values, one per template variable.
    pub vars: &'a [String],
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The parts of a `multipart/form-data` body, read by the server (`body` is then unused).
    pub form: Option<&'a [FormPart]>,
}

/// Builds the request message for `plan` and frames it.
pub fn build_request(
    plan: &RoutePlan,
    schemas: &Schemas,
    options: &JsonOptions,
    input: RequestInput<'_>,
) -> Result<Outgoing, GatewayError> {
    if let Some(frame) = fast_request(plan, schemas, options, &input)? {
        return Ok(frame);
    }
    let message = request_message(plan, options, input)?;
    Ok(Outgoing::whole(frame::encode(&message)))
}

/// The request frame without `DynamicMessage`: a JSON body through the direct JSON-to-wire
/// encoder (`json_to_wire.rs`), a binary protobuf body as the client sent it once it decodes
/// (shared with the request's buffer, not copied), and the path variables and query
/// parameters encoded after it; on a route without a body, those alone. `None` when the route
/// is outside the fast path, the fast paths are off, or the body is declined: the reference
/// path then decides. A JSON body it refuses (a key given twice) is refused as the reference
/// path refuses it.
pub fn fast_request(
    plan: &RoutePlan,
    schemas: &Schemas,
    options: &JsonOptions,
    input: &RequestInput<'_>,
) -> Result<Option<Outgoing>, GatewayError> {
    if !options.fast_paths {
        return Ok(None);
    }
    if matches!(plan.body, BodyPlan::None) {
        return bodiless_request(plan, schemas, input);
    }
    let Some(body_type) = plan.fast_body.as_ref().filter(|_| !is_blank(input.body)) else {
        return Ok(None);
    };
    let Some((mut head, shared)) = body_pieces(plan, schemas, options, body_type, input)? else {
        return Ok(None);
    };
    // What follows a shared body goes into a piece of its own; otherwise after the body.
    let mut tail = Vec::new();
    let after = match shared.is_empty() {
        true => &mut head,
        false => &mut tail,
    };
    write_path_and_query(plan, schemas, options, input, after)?;
    framed(head, shared, tail).map(Some)
}

/// The frame of a route without a body (a GET): its path variables and query parameters,
/// when all of them are written directly; `None` otherwise.
fn bodiless_request(
    plan: &RoutePlan,
    schemas: &Schemas,
    input: &RequestInput<'_>,
) -> Result<Option<Outgoing>, GatewayError> {
    let mut head = Vec::with_capacity(frame::HEADER_LEN + 64);
    head.extend_from_slice(&[0; frame::HEADER_LEN]);
    if !direct_path_and_query(plan, schemas, input.vars, input.query, &mut head) {
        return Ok(None);
    }
    framed(head, Bytes::new(), Vec::new()).map(Some)
}

/// The frame of `head` (which starts with room for the header), `shared` and `tail`.
fn framed(mut head: Vec<u8>, shared: Bytes, tail: Vec<u8>) -> Result<Outgoing, GatewayError> {
    // JSON can take fewer bytes than its wire form (a field number past 2^28 costs five), so a
    // body within the limit can still make a message too long for the frame header.
    let len = head.len() - frame::HEADER_LEN + shared.len() + tail.len();
    if u32::try_from(len).is_err() {
        return Err(GatewayError::invalid_argument("request message too large"));
    }
    head[..frame::HEADER_LEN].copy_from_slice(&frame::header(len));
    let (head, tail) = (Bytes::from(head), Bytes::from(tail));
    Ok(Outgoing::around(head, shared, tail))
}

/// The body's part of the frame: the first piece (room for the header, then the body's wire
/// fields) and, for a binary protobuf body of [`frame::SHARE_FROM`] bytes or more, the body
/// itself shared as it came (else empty). `None` when the body is declined.
fn body_pieces(
    plan: &RoutePlan,
    schemas: &Schemas,
    options: &JsonOptions,
    body_type: &MessageDescriptor,
    input: &RequestInput<'_>,
) -> Result<Option<(Vec<u8>, Bytes)>, GatewayError> {
    let format = BodyFormat::of(input.content_type, input.body);
    let capacity = match format {
        BodyFormat::Json => input.body.len() + 64,
        _ => 16,
    };
    let mut head = Vec::with_capacity(frame::HEADER_LEN + capacity);
    head.extend_from_slice(&[0; frame::HEADER_LEN]);
    let shared = match format {
        BodyFormat::Json => {
            if !json_body(plan, schemas, options, body_type, input.body, &mut head)? {
                return Ok(None);
            }
            Bytes::new()
        }
        BodyFormat::Protobuf => {
            if !protobuf_body(plan, body_type, input.body, &mut head) {
                return Ok(None);
            }
            if input.body.len() >= frame::SHARE_FROM {
                input.body.clone()
            } else {
                head.extend_from_slice(input.body);
                Bytes::new()
            }
        }
        _ => return Ok(None),
    };
    Ok(Some((head, shared)))
}

/// The path variables and query parameters as wire fields into `out`, after the body:
/// directly where [`direct_path_and_query`] can, else through a message of the request type.
fn write_path_and_query(
    plan: &RoutePlan,
    schemas: &Schemas,
    options: &JsonOptions,
    input: &RequestInput<'_>,
    out: &mut Vec<u8>,
) -> Result<(), GatewayError> {
    let query = input
        .query
        .filter(|_| !matches!(plan.body, BodyPlan::Message));
    let start = out.len();
    if direct_path_and_query(plan, schemas, input.vars, query, out) {
        return Ok(());
    }
    out.truncate(start);
    if !plan.path_vars.is_empty() || query.is_some() {
        let mut rest = DynamicMessage::new(plan.input.clone());
        for (path, raw) in plan.path_vars.iter().zip(input.vars) {
            set_path_variable(&mut rest, path, raw).map_err(|e| invalid_variable(path, &e))?;
        }
        if let Some(q) = query {
            query::apply(&mut rest, q, &plan.bound, options)?;
        }
        prost::Message::encode_raw(&rest, out);
    }
    Ok(())
}

/// Plain string path variables ([`string_variables`]) and simple query parameters
/// (`query_to_wire.rs`) written straight as wire fields into `out`; `false`, perhaps having
/// written some of them, when either needs the reference path.
fn direct_path_and_query(
    plan: &RoutePlan,
    schemas: &Schemas,
    vars: &[String],
    query: Option<&str>,
    out: &mut Vec<u8>,
) -> bool {
    if !plan.path_vars.is_empty() && !string_variables(plan, vars, out) {
        return false;
    }
    match query {
        None => true,
        Some(query) => schemas
            .encode_query(&plan.input, query, &plan.bound, out)
            .is_ok(),
    }
}

/// The path variables of a route whose variables are all string fields of the request
/// message itself (`RoutePlan::string_path_vars`) written straight as wire fields into `out`,
/// as encoding them through a message would; `false`, writing nothing, for another route or
/// an empty value (which a message would leave out).
fn string_variables(plan: &RoutePlan, vars: &[String], out: &mut Vec<u8>) -> bool {
    let direct = plan.string_path_vars && vars.iter().all(|raw| !raw.is_empty());
    if direct {
        for (path, raw) in plan.path_vars.iter().zip(vars) {
            prost::encoding::string::encode(path.leaf().number(), raw, out);
        }
    }
    direct
}

/// A JSON body's wire bytes into `out`, or `false` when the encoder declines it.
fn json_body(
    plan: &RoutePlan,
    schemas: &Schemas,
    options: &JsonOptions,
    body_type: &MessageDescriptor,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool, GatewayError> {
    let Some(encoder) = schemas.encoder(body_type) else {
        return Ok(false);
    };
    check_depth(body, options.max_depth)?;
    let deny = options.reject_unknown_fields;
    let encoded = match &plan.body {
        BodyPlan::Field(field) => encoder.encode_field(field.leaf().number(), body, deny, out),
        _ => encoder.encode(body, deny, out),
    };
    // A refused body: the reference path decides, and says where it is wrong.
    Ok(encoded.is_ok())
}

/// Whether a binary protobuf body goes into the frame as the client sent it (as the body
/// field's bytes on a `body: "field"` route, whose key and length it writes into `out`): when
/// it decodes as the body message, the same message the reference path would encode again,
/// without the copy and the walk. `false` when it does not decode: the reference path then
/// says why.
fn protobuf_body(
    plan: &RoutePlan,
    body_type: &MessageDescriptor,
    body: &Bytes,
    out: &mut Vec<u8>,
) -> bool {
    // Decoding from `Bytes` shares the body's `bytes` fields instead of copying them.
    if DynamicMessage::decode(body_type.clone(), body.clone()).is_err() {
        return false;
    }
    if let BodyPlan::Field(field) = &plan.body {
        let key = u64::from(field.leaf().number()) << 3 | 2;
        prost::encoding::encode_varint(key, out);
        prost::encoding::encode_varint(body.len() as u64, out);
    }
    true
}

/// Builds the request message for `plan`.
pub fn request_message(
    plan: &RoutePlan,
    options: &JsonOptions,
    input: RequestInput<'_>,
) -> Result<DynamicMessage, GatewayError> {
    let mut message = body_message(plan, options, &input)?;
    for (path, raw) in plan.path_vars.iter().zip(input.vars) {
        set_path_variable(&mut message, path, raw).map_err(|e| invalid_variable(path, &e))?;
    }
    if let (Some(q), false) = (input.query, matches!(plan.body, BodyPlan::Message)) {
        query::apply(&mut message, q, &plan.bound, options)?;
    }
    if let (Some(mask), BodyPlan::Field(body)) = (&plan.patch_mask, &plan.body) {
        fill_patch_mask(&mut message, mask, body.leaf(), input.body)?;
    }
    Ok(message)
}

fn body_message(
    plan: &RoutePlan,
    options: &JsonOptions,
    input: &RequestInput<'_>,
) -> Result<DynamicMessage, GatewayError> {
    let format = BodyFormat::of(input.content_type, input.body);
    match (&plan.body, format) {
        (BodyPlan::None, _) => Ok(DynamicMessage::new(plan.input.clone())),
        (BodyPlan::Message, _) if plan.http_body_request => {
            Ok(body::http_body(&plan.input, input.body, input.content_type))
        }
        (BodyPlan::Field(field), _) if plan.http_body_request => Ok(body::http_body_field(
            plan,
            field.leaf(),
            input.body,
            input.content_type,
        )),
        (_, BodyFormat::Protobuf) => body::protobuf_body(plan, input.body),
        (_, BodyFormat::Form) => body::form_body(plan, input.body, options),
        (_, BodyFormat::Multipart) => match input.form {
            Some(parts) => body::multipart_body(plan, parts, options),
            None => Err(GatewayError::invalid_argument(
                "the multipart/form-data body could not be read",
            )),
        },
        (BodyPlan::Message, BodyFormat::Json) => parse_json(&plan.input, input.body, options, ""),
        (BodyPlan::Field(field), BodyFormat::Json) => {
            body_field(plan, field.leaf(), input.body, options)
        }
    }
}

/// An empty (or all-whitespace) body is an empty message, as in grpc-gateway.
fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// `body` as a `desc` message (the request message or its body field's).
fn parse_json(
    desc: &MessageDescriptor,
    body: &[u8],
    options: &JsonOptions,
    prefix: &str,
) -> Result<DynamicMessage, GatewayError> {
    if is_blank(body) {
        return Ok(DynamicMessage::new(desc.clone()));
    }
    parse_message(desc, body, options, prefix)
}

/// `body: "field"`: a message field is parsed directly; any other field (a scalar, a list,
/// a map) is parsed as the value of that key in the request message.
fn body_field(
    plan: &RoutePlan,
    field: &FieldDescriptor,
    body: &Bytes,
    options: &JsonOptions,
) -> Result<DynamicMessage, GatewayError> {
    let mut message = DynamicMessage::new(plan.input.clone());
    if is_blank(body) {
        return Ok(message);
    }
    match field.kind() {
        Kind::Message(m) if !field.is_list() && !field.is_map() => {
            let prefix = format!("{}.", field.json_name());
            let value = parse_json(&m, body, options, &prefix)?;
            message.set_field(field, Value::Message(value));
            Ok(message)
        }
        _ => {
            let name = field.json_name();
            let mut wrapped = Vec::with_capacity(body.len() + name.len() + 8);
            wrapped.extend_from_slice(b"{\"");
            wrapped.extend_from_slice(name.as_bytes());
            wrapped.extend_from_slice(b"\":");
            wrapped.extend_from_slice(body);
            wrapped.push(b'}');
            let parsed = parse_json(&plan.input, &wrapped, options, "")?;
            if let Some(v) = parsed.get_field_by_name(field.name()) {
                message.set_field(field, v.into_owned());
            }
            Ok(message)
        }
    }
}

/// A refused path variable, named as the template names it, its field by JSON names.
fn invalid_variable(path: &FieldPath, reason: &str) -> GatewayError {
    let field: Vec<&str> = path.fields.iter().map(FieldDescriptor::json_name).collect();
    GatewayError::field_invalid(
        &format!("path variable {:?}", path.text),
        &field.join("."),
        reason,
    )
}

/// Sets a path variable; a repeated field takes a comma-separated list.
fn set_path_variable(
    message: &mut DynamicMessage,
    path: &FieldPath,
    raw: &str,
) -> Result<(), String> {
    let (leaf, parents) = path
        .fields
        .split_last()
        .ok_or_else(|| "empty field path".to_string())?;
    let target = parent_mut(message, parents)?;
    if leaf.is_list() {
        let values = raw
            .split(',')
            .map(|part| scalar::parse(&leaf.kind(), part))
            .collect::<Result<Vec<_>, _>>()?;
        target.set_field(leaf, Value::List(values));
    } else {
        target.set_field(leaf, scalar::parse(&leaf.kind(), raw)?);
    }
    Ok(())
}

/// PATCH with a body field and no mask from the client: the mask lists the body's JSON keys
/// (as proto field paths, sorted), as grpc-gateway's `allow_patch_feature` does.
fn fill_patch_mask(
    message: &mut DynamicMessage,
    mask: &FieldDescriptor,
    body_field: &FieldDescriptor,
    body: &Bytes,
) -> Result<(), GatewayError> {
    let has_paths = message
        .get_field(mask)
        .as_message()
        .and_then(|m| m.get_field_by_name("paths"))
        .is_some_and(|p| p.as_list().is_some_and(|l| !l.is_empty()));
    let Kind::Message(body_type) = body_field.kind() else {
        return Ok(());
    };
    if has_paths || is_blank(body) {
        return Ok(());
    }
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_argument(format!("invalid JSON body: {}", json_error(&e)))
    })?;
    let mut paths = Vec::new();
    if let serde_json::Value::Object(object) = &json {
        mask_paths(&body_type, object, "", &mut paths)
            .map_err(|e| GatewayError::invalid_argument(format!("invalid JSON body: {e}")))?;
    }
    paths.sort();
    let mut field_mask = DynamicMessage::new(match mask.kind() {
        Kind::Message(m) => m,
        _ => return Ok(()),
    });
    field_mask.set_field_by_name(
        "paths",
        Value::List(paths.into_iter().map(Value::String).collect()),
    );
    message.set_field(mask, Value::Message(field_mask));
    Ok(())
}

/// The mask paths of a JSON object, as grpc-gateway builds them: nested messages recurse
/// (an empty object is a path of its own), `Struct` and `Value` contents recurse blindly by
/// key, lists, maps and other well-known types are leaves; an unknown key is an error.
fn mask_paths(
    desc: &MessageDescriptor,
    object: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    paths: &mut Vec<String>,
) -> Result<(), String> {
    for (key, value) in object {
        // An unknown key is ignored here as in the body (which refused it already when
        // unknown fields are refused): it names nothing to update.
        let Some(field) = crate::route::field_path::find_field(desc, key) else {
            continue;
        };
        let path = format!("{prefix}{}", field.name());
        match (field.kind(), value) {
            (Kind::Message(m), serde_json::Value::Object(inner))
                if !field.is_list() && !field.is_map() && !inner.is_empty() =>
            {
                match well_known(&m) {
                    Some(WellKnown::Struct | WellKnown::Value) => blind_paths(inner, &path, paths),
                    _ if in_protobuf_package(m.full_name()) => paths.push(path),
                    _ => mask_paths(&m, inner, &format!("{path}."), paths)?,
                }
            }
            _ => paths.push(path),
        }
    }
    Ok(())
}

/// Paths into free-form JSON: every key, down to the leaves.
fn blind_paths(
    object: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    paths: &mut Vec<String>,
) {
    for (key, value) in object {
        let path = format!("{prefix}.{key}");
        match value {
            serde_json::Value::Object(inner) if !inner.is_empty() => {
                blind_paths(inner, &path, paths)
            }
            _ => paths.push(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(check_depth(b"[[[1]]]", 3).is_ok());
        assert!(check_depth(b"[[[[1]]]]", 3).is_err());
        assert!(check_depth(br#"{"a":"[[[[[[\"[[["}"#, 1).is_ok());
        let deep = "[".repeat(10_000);
        let err = check_depth(deep.as_bytes(), 100).unwrap_err();
        assert!(err.message.contains("deeper than 100"), "{}", err.message);
    }
}
