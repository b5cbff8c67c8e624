//! The request body in the forms other than JSON: raw bytes for a `google.api.HttpBody`
//! (the whole request or one field), binary protobuf, HTML forms
//! (`application/x-www-form-urlencoded`) and `multipart/form-data` uploads, each into the
//! message the binding's `body` names. Path variables and query parameters are applied after
//! it by `request.rs`, whatever the form.

use std::borrow::Cow;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};

use super::json_to_message::parse_message;
use super::options::JsonOptions;
use super::query;
use crate::error::{quoted, GatewayError};
use crate::route::field_path::find_field;
use crate::route::{BodyPlan, RoutePlan};

/// How a request body is written, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFormat {
    /// JSON: `application/json`, no type, or any type not named below (grpc-gateway reads
    /// every body as JSON).
    Json,
    /// `application/x-protobuf` or `application/protobuf`: the message's wire bytes.
    Protobuf,
    /// `application/x-www-form-urlencoded`, unless the body starts with `{` or `[` (plain
    /// `curl -d` sends JSON with this type, and clients rely on it).
    Form,
    /// `multipart/form-data`, read into [`FormPart`]s by the server.
    Multipart,
}

impl BodyFormat {
    pub(super) fn of(content_type: Option<&str>, body: &[u8]) -> BodyFormat {
        match media_type(content_type).as_deref() {
            Some("application/x-protobuf" | "application/protobuf") => BodyFormat::Protobuf,
            Some("application/x-www-form-urlencoded") if !starts_like_json(body) => {
                BodyFormat::Form
            }
            Some("multipart/form-data") => BodyFormat::Multipart,
            _ => BodyFormat::Json,
        }
    }
}

/// The media type of a `Content-Type`, lower case, without parameters.
/// Borrowed when it is lower case already, as nearly every client sends it.
pub fn media_type(content_type: Option<&str>) -> Option<Cow<'_, str>> {
    let media = content_type?.split(';').next()?.trim();
    Some(match media.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(media.to_ascii_lowercase()),
        false => Cow::Borrowed(media),
    })
}

fn starts_like_json(body: &[u8]) -> bool {
    matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone)]
pub struct FormPart {
    /// The part's name: a field path relative to the body message, or `*` for the JSON of
    /// the whole body message.
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl FormPart {
    /// A file (a filename, or a type that is not text): its bytes are taken as they are.
    fn is_file(&self) -> bool {
        self.filename.is_some()
            || media_type(self.content_type.as_deref())
                .is_some_and(|t| !t.starts_with("text/") && t != "application/json")
    }
}

/// `google.api.HttpBody` with `data` and `content_type`.
pub(super) fn http_body(
    desc: &MessageDescriptor,
    data: &Bytes,
    content_type: Option<&str>,
) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc.clone());
    if let Some(ct) = content_type {
        message.set_field_by_name("content_type", Value::String(ct.to_string()));
    }
    message.set_field_by_name("data", Value::Bytes(data.clone()));
    message
}

/// The request message holding the raw body in its `HttpBody` body field.
pub(super) fn http_body_field(
    plan: &RoutePlan,
    field: &FieldDescriptor,
    body: &Bytes,
    content_type: Option<&str>,
) -> DynamicMessage {
    let mut message = DynamicMessage::new(plan.input.clone());
    if let Kind::Message(m) = field.kind() {
        let value = http_body(&m, body, content_type);
        message.set_field(field, Value::Message(value));
    }
    message
}

/// The message type a binding's body is read as (the whole request, or a message field),
/// and the field it goes into.
fn body_target(
    plan: &RoutePlan,
) -> Result<(MessageDescriptor, Option<FieldDescriptor>), GatewayError> {
    match &plan.body {
        BodyPlan::Field(f) => match f.leaf().kind() {
            Kind::Message(m) if !f.leaf().is_list() && !f.leaf().is_map() => {
                Ok((m, Some(f.leaf().clone())))
            }
            _ => Err(GatewayError::invalid_argument(format!(
                "this route's body is the field {:?}, which is not a message: send it as JSON",
                f.leaf().json_name()
            ))),
        },
        _ => Ok((plan.input.clone(), None)),
    }
}

/// The request message with `body` set where the binding says.
fn into_request(
    plan: &RoutePlan,
    field: Option<FieldDescriptor>,
    body: DynamicMessage,
) -> DynamicMessage {
    match field {
        None => body,
        Some(field) => {
            let mut message = DynamicMessage::new(plan.input.clone());
            message.set_field(&field, Value::Message(body));
            message
        }
    }
}

/// A binary protobuf body: the wire bytes of the body message.
pub(super) fn protobuf_body(
    plan: &RoutePlan,
    body: &Bytes,
) -> Result<DynamicMessage, GatewayError> {
    let (desc, field) = body_target(plan)?;
    let message = DynamicMessage::decode(desc.clone(), body.clone()).map_err(|e| {
        GatewayError::invalid_argument(format!(
            "invalid protobuf body for {}: {e}",
            desc.full_name()
        ))
    })?;
    Ok(into_request(plan, field, message))
}

/// An HTML form: its fields set by the query-parameter rules, relative to the body message.
pub(super) fn form_body(
    plan: &RoutePlan,
    body: &Bytes,
    options: &JsonOptions,
) -> Result<DynamicMessage, GatewayError> {
    let (desc, field) = body_target(plan)?;
    let text = std::str::from_utf8(body)
        .map_err(|_| GatewayError::invalid_argument("the form body is not UTF-8"))?;
    let mut message = DynamicMessage::new(desc);
    query::apply_form(&mut message, text, options)?;
    Ok(into_request(plan, field, message))
}

/// A `multipart/form-data` upload: a part named `*` is the JSON of the whole body message,
/// applied first; the others each set the field their name gives.
pub(super) fn multipart_body(
    plan: &RoutePlan,
    parts: &[FormPart],
    options: &JsonOptions,
) -> Result<DynamicMessage, GatewayError> {
    let (desc, field) = body_target(plan)?;
    let prefix = field.as_ref().map(|f| format!("{}.", f.json_name()));
    let prefix = prefix.as_deref().unwrap_or("");
    let mut message = DynamicMessage::new(desc.clone());
    for part in parts.iter().filter(|p| p.name == "*") {
        let json = parse_message(&desc, &part.data, options, prefix)?;
        message
            .merge(json.encode_to_vec().as_slice())
            .map_err(|e| GatewayError::internal(format!("cannot merge the JSON part: {e}")))?;
    }
    let mut seen = Vec::new();
    for part in parts.iter().filter(|p| p.name != "*") {
        apply_part(&mut message, part, options, &mut seen)?;
    }
    Ok(into_request(plan, field, message))
}

/// One named part: a file into a `bytes` or `HttpBody` field, text by the query rules.
fn apply_part(
    message: &mut DynamicMessage,
    part: &FormPart,
    options: &JsonOptions,
    seen: &mut Vec<Vec<u32>>,
) -> Result<(), GatewayError> {
    let leaf = leaf_field(&message.descriptor(), &part.name);
    match leaf.as_ref().map(|f| (f.kind(), f)) {
        Some((Kind::Bytes, f)) => set_file(message, &part.name, f, Value::Bytes(part.data.clone())),
        Some((Kind::Message(m), f)) if m.full_name() == "google.api.HttpBody" => {
            let value = http_body(&m, &part.data, part.content_type.as_deref());
            set_file(message, &part.name, f, Value::Message(value))
        }
        _ if part.is_file() => Err(GatewayError::field_invalid(
            &format!("form part {}", quoted(&part.name)),
            &part.name,
            "a file can only set a bytes or google.api.HttpBody field",
        )),
        _ => {
            let text = std::str::from_utf8(&part.data).map_err(|_| {
                GatewayError::field_invalid(
                    &format!("form part {}", quoted(&part.name)),
                    &part.name,
                    "a text part must be UTF-8",
                )
            })?;
            query::apply_field(message, &part.name, text, options, seen)
        }
    }
}

/// The field a dotted part name ends in (proto or JSON names), through singular messages.
fn leaf_field(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    let mut current = desc.clone();
    let mut names = name.split('.').peekable();
    while let Some(segment) = names.next() {
        let field = find_field(&current, segment)?;
        if names.peek().is_none() {
            return Some(field);
        }
        current = match field.kind() {
            Kind::Message(m) if !field.is_list() && !field.is_map() => m,
            _ => return None,
        };
    }
    None
}

/// Sets (or, for a repeated field, appends) a file's value at the dotted `name`.
fn set_file(
    message: &mut DynamicMessage,
    name: &str,
    leaf: &FieldDescriptor,
    value: Value,
) -> Result<(), GatewayError> {
    let mut target = message;
    let parents: Vec<&str> = name.split('.').collect();
    for segment in &parents[..parents.len() - 1] {
        let field = find_field(&target.descriptor(), segment).ok_or_else(|| {
            GatewayError::invalid_argument(format!("form part {}: no such field", quoted(name)))
        })?;
        target = match target.get_field_mut(&field) {
            Value::Message(m) => m,
            _ => {
                return Err(GatewayError::invalid_argument(format!(
                    "form part {}: not a message path",
                    quoted(name)
                )))
            }
        };
    }
    if leaf.is_list() {
        if let Value::List(items) = target.get_field_mut(leaf) {
            items.push(value);
        }
    } else {
        target.set_field(leaf, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_type_is_lower_case_without_parameters_and_copied_only_when_it_must_be() {
        let lower = media_type(Some(" application/json ; charset=utf-8")).unwrap();
        assert_eq!(lower, "application/json");
        assert!(matches!(lower, Cow::Borrowed(_)));
        let upper = media_type(Some("Multipart/Form-Data; boundary=X")).unwrap();
        assert_eq!(upper, "multipart/form-data");
        assert!(matches!(upper, Cow::Owned(_)));
        assert_eq!(media_type(Some("")).as_deref(), Some(""));
        assert_eq!(media_type(None), None);
    }

    #[test]
    fn the_body_format_follows_the_media_type_in_any_case() {
        let of = |ct: &str, body: &str| BodyFormat::of(Some(ct), body.as_bytes());
        assert_eq!(of("APPLICATION/X-PROTOBUF", ""), BodyFormat::Protobuf);
        assert_eq!(of("application/protobuf", ""), BodyFormat::Protobuf);
        assert_eq!(
            of("application/x-www-form-urlencoded", "a=1"),
            BodyFormat::Form
        );
        assert_eq!(
            of("application/x-www-form-urlencoded", " {}"),
            BodyFormat::Json
        );
        assert_eq!(
            of("multipart/form-data; boundary=b", ""),
            BodyFormat::Multipart
        );
        assert_eq!(of("text/plain", "{}"), BodyFormat::Json);
    }
}
