//! The per-binding plan: everything the request path needs, resolved at load time.

use http::uri::PathAndQuery;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};

use super::field_path::FieldPath;
use super::rule::HttpRule;
use super::template::Template;
use crate::well_known::{has_text_form, well_known, WellKnown};

/// Where the request body goes.
#[derive(Debug, Clone)]
pub enum BodyPlan {
    /// `body: "*"`: the whole request message; the query string is not used.
    Message,
    /// `body: "field"`: one top-level field.
    Field(FieldPath),
    /// No `body`: the request body is ignored.
    None,
}

/// One binding, compiled.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub method: MethodDescriptor,
    pub rule: HttpRule,
    /// `/skvps/locdata`: the route template as metrics (`http_route`) and logs name it.
    pub label: std::sync::Arc<str>,
    pub template: Template,
    /// `/package.Service/Method`.
    pub grpc_path: PathAndQuery,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    pub body: BodyPlan,
    pub response_body: Option<FieldPath>,
    /// One per template variable, in the template's order.
    pub path_vars: Vec<FieldPath>,
    /// Every path variable is a singular string field of the request message itself (the
    /// usual `{name}`), so its value goes on the wire as it is.
    pub string_path_vars: bool,
    /// Field-number paths the query string may not set (path variables and the body field).
    pub bound: Vec<Vec<u32>>,
    /// Index of the upstream that serves the method's service.
    pub upstream: usize,
    /// The body is a raw `google.api.HttpBody` (not JSON): the whole request, or the field
    /// `body` names.
    pub http_body_request: bool,
    /// The response is a raw `google.api.HttpBody`.
    pub http_body_response: bool,
    /// For PATCH with a body field: the request's one `google.protobuf.FieldMask` field,
    /// filled from the JSON keys of the body when the client sends no mask.
    pub patch_mask: Option<FieldDescriptor>,
    /// The request message can hold a `google.protobuf.Any` at some depth.
    pub input_holds_any: bool,
    /// The message type the request transcoder's fast path encodes the body as, where it
    /// applies ([`fast_body_type`]); `None` sends every request of the route through the
    /// reference path.
    pub fast_body: Option<MessageDescriptor>,
}

impl RoutePlan {
    /// A unary method; streaming methods are served by the streaming transcoder.
    pub fn is_unary(&self) -> bool {
        !self.method.is_client_streaming() && !self.method.is_server_streaming()
    }

    /// `vpresult.LocationService.getLocationPose`, for messages.
    pub fn method_name(&self) -> &str {
        self.method.full_name()
    }
}

/// The message type the fast path encodes a route's body as, where it applies: a JSON body
/// that is the whole request message or one top-level message field of it (not an
/// `HttpBody`, not a PATCH whose mask is filled from the body), and path variables that each
/// set one singular scalar or enum field. Those (and query parameters) are encoded after the
/// body: decoding keeps the last value of a scalar and merges messages, which is the
/// reference path's overwriting. A repeated or message-typed variable would append or merge
/// instead, so such routes keep the reference path.
pub(super) fn fast_body_type(plan: &RoutePlan) -> Option<MessageDescriptor> {
    let simple_vars = plan.path_vars.iter().all(|p| {
        let leaf = p.leaf();
        !leaf.is_list() && !leaf.is_map() && !matches!(leaf.kind(), Kind::Message(_))
    });
    if !simple_vars || plan.patch_mask.is_some() || plan.http_body_request {
        return None;
    }
    match &plan.body {
        BodyPlan::Message => Some(plan.input.clone()),
        BodyPlan::Field(f) if f.fields.len() == 1 && !f.leaf().is_list() && !f.leaf().is_map() => {
            f.leaf().kind().as_message().cloned()
        }
        _ => None,
    }
}

/// Whether a `message` can hold a `google.protobuf.Any`, at any depth.
pub(super) fn holds_any(message: &MessageDescriptor) -> bool {
    fn walk(message: &MessageDescriptor, seen: &mut Vec<MessageDescriptor>) -> bool {
        if matches!(well_known(message), Some(WellKnown::Any)) {
            return true;
        }
        if seen.contains(message) {
            return false;
        }
        seen.push(message.clone());
        message.fields().any(|f| match f.kind() {
            Kind::Message(m) => walk(&m, seen),
            _ => false,
        })
    }
    walk(message, &mut Vec::new())
}

/// Whether `message` is `google.api.HttpBody`.
pub(super) fn is_http_body(message: &MessageDescriptor) -> bool {
    message.full_name() == "google.api.HttpBody"
}

/// The leaf kinds a path variable may bind: scalars, enums, repeated ones (split on commas),
/// and the well-known messages that have a string form.
pub(super) fn check_path_leaf(field: &FieldDescriptor) -> Result<(), String> {
    if field.is_map() {
        return Err(format!("path variable field {:?} is a map", field.name()));
    }
    match field.kind() {
        Kind::Message(m) if !has_text_form(&m) => Err(format!(
            "path variable field {:?} is a message ({}), which has no string form",
            field.name(),
            m.full_name()
        )),
        Kind::Message(_) if field.is_list() => Err(format!(
            "path variable field {:?} is a repeated message",
            field.name()
        )),
        _ => Ok(()),
    }
}

/// The one top-level `google.protobuf.FieldMask` field of `input`, if there is exactly one.
pub(super) fn single_field_mask(input: &MessageDescriptor) -> Option<FieldDescriptor> {
    let mut masks = input.fields().filter(|f| {
        !f.is_list()
            && matches!(f.kind(), Kind::Message(m) if well_known(&m) == Some(WellKnown::FieldMask))
    });
    let first = masks.next()?;
    masks.next().is_none().then_some(first)
}
