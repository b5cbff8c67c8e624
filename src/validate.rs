//! `buf.validate` (protovalidate) rules, checked at the edge with `--validate`.
//!
//! The rules live in the descriptors as options (`(buf.validate.field)`,
//! `(buf.validate.message)`, `(buf.validate.oneof)`), so they are found once per snapshot:
//! [`Rules::build`] records which message types have rules, themselves or in anything they
//! hold, and compiles those (CEL included) into one `prost_protovalidate::Validator`. A request
//! whose type has no rules is never decoded for them: the REST fast path and the gRPC
//! passthrough keep their wire bytes untouched, and a type with rules is decoded once, from
//! the wire bytes every protocol ends with.
//!
//! A violation is `INVALID_ARGUMENT` with two details: a `google.rpc.BadRequest` (one field
//! violation per rule violation, for clients that know only Google's details) and the
//! `buf.validate.Violations` protovalidate's own clients read.

use std::collections::HashSet;

use bytes::Bytes;
use prost::Message;
use prost_protovalidate::{Error, ValidationError, Validator, ValidatorOption};
use prost_reflect::{
    DescriptorPool, DynamicMessage, ExtensionDescriptor, Kind, MessageDescriptor, ReflectMessage,
};

use crate::error::{clipped, clipped_to, ErrorExtra, GatewayError, ECHO_LIMIT};
use crate::grpc::status::{self, FieldViolation};

/// The compiled rules of one snapshot's message types.
pub struct Rules {
    /// Full names of the message types that have rules, or hold a message that has.
    with_rules: HashSet<String>,
    validator: Validator,
    /// Why the rules of a type do not compile, for each type whose rules do not.
    broken: Vec<String>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("with_rules", &self.with_rules.len())
            .finish_non_exhaustive()
    }
}

impl Rules {
    /// Finds the message types of `pool` with rules and compiles theirs.
    pub fn build(pool: &DescriptorPool) -> Rules {
        let with_rules = types_with_rules(pool);
        let preload: Vec<MessageDescriptor> = pool
            .all_messages()
            .filter(|m| with_rules.contains(m.full_name()))
            .collect();
        let validator = match preload.is_empty() {
            true => Validator::new(),
            false => {
                Validator::with_options(&[ValidatorOption::MessageDescriptors(preload.clone())])
            }
        };
        let broken = preload
            .iter()
            .filter_map(|desc| compile_error(&validator, desc))
            .collect();
        Rules {
            with_rules,
            validator,
            broken,
        }
    }

    /// What keeps the rules of some message types from compiling (a CEL expression that
    /// does not parse or type-check, a rule of the wrong kind for its field): `serve --validate`
    /// refuses to start with any; a reload keeps serving, and those types' requests are
    /// answered `INTERNAL`.
    pub fn broken(&self) -> &[String] {
        &self.broken
    }

    /// Whether messages of `desc`'s type have anything to check.
    pub fn has_rules(&self, desc: &MessageDescriptor) -> bool {
        !self.with_rules.is_empty() && self.with_rules.contains(desc.full_name())
    }

    /// Checks the encoded message `wire` of type `desc`; decodes it only when the type has
    /// rules. Bytes that do not decode are left to the upstream, which judges them as it
    /// would without the gateway.
    pub fn check_wire(&self, desc: &MessageDescriptor, wire: &[u8]) -> Result<(), GatewayError> {
        if !self.has_rules(desc) {
            return Ok(());
        }
        match DynamicMessage::decode(desc.clone(), wire) {
            Ok(message) => self.check(&message),
            Err(_) => Ok(()),
        }
    }

    /// Checks `message` against its type's rules.
    pub fn check(&self, message: &DynamicMessage) -> Result<(), GatewayError> {
        if !self.has_rules(&message.descriptor()) {
            return Ok(());
        }
        match self.validator.validate(message) {
            Ok(()) => Ok(()),
            Err(Error::Validation(violations)) => Err(violated(&violations)),
            Err(other) => Err(GatewayError::internal(format!(
                "the validation rules of {} could not be evaluated: {}",
                message.descriptor().full_name(),
                clipped(&other.to_string())
            ))),
        }
    }
}

/// Why `desc`'s rules do not compile, if they do not: found by checking an empty message,
/// which runs every compiled rule.
fn compile_error(validator: &Validator, desc: &MessageDescriptor) -> Option<String> {
    match validator.validate(&DynamicMessage::new(desc.clone())) {
        Err(Error::Compilation(error)) => Some(format!(
            "the rules of {} do not compile: {error}",
            desc.full_name()
        )),
        _ => None,
    }
}

/// The full names of the message types that have rules of their own or hold (in a field, a
/// list or a map value) a message type that has.
fn types_with_rules(pool: &DescriptorPool) -> HashSet<String> {
    let Some(options) = RuleOptions::of(pool) else {
        return HashSet::new();
    };
    let mut found: HashSet<String> = pool
        .all_messages()
        .filter(|m| options.on_message(m))
        .map(|m| m.full_name().to_string())
        .collect();
    if found.is_empty() {
        return found;
    }
    loop {
        let holders: Vec<String> = pool
            .all_messages()
            .filter(|m| !found.contains(m.full_name()) && holds_any(m, &found))
            .map(|m| m.full_name().to_string())
            .collect();
        if holders.is_empty() {
            return found;
        }
        found.extend(holders);
    }
}

fn holds_any(message: &MessageDescriptor, found: &HashSet<String>) -> bool {
    message.fields().any(|f| match f.kind() {
        Kind::Message(inner) => found.contains(inner.full_name()),
        _ => false,
    })
}

/// The `buf.validate` option extensions, as the pool knows them.
struct RuleOptions {
    message: ExtensionDescriptor,
    field: ExtensionDescriptor,
    oneof: ExtensionDescriptor,
}

impl RuleOptions {
    fn of(pool: &DescriptorPool) -> Option<RuleOptions> {
        Some(RuleOptions {
            message: pool.get_extension_by_name("buf.validate.message")?,
            field: pool.get_extension_by_name("buf.validate.field")?,
            oneof: pool.get_extension_by_name("buf.validate.oneof")?,
        })
    }

    /// Whether `message` carries rules itself: on the message, a field or a oneof.
    fn on_message(&self, message: &MessageDescriptor) -> bool {
        message.options().has_extension(&self.message)
            || message
                .fields()
                .any(|f| f.options().has_extension(&self.field))
            || message
                .oneofs()
                .any(|o| o.options().has_extension(&self.oneof))
    }
}

/// `INVALID_ARGUMENT` with a `google.rpc.BadRequest` and a `buf.validate.Violations` detail.
fn violated(error: &ValidationError) -> GatewayError {
    let violations: Vec<FieldViolation> = error
        .violations()
        .iter()
        .map(|v| FieldViolation {
            field: clipped_to(&v.field_path(), 2 * ECHO_LIMIT),
            description: clipped_to(description(v), 2 * ECHO_LIMIT),
        })
        .collect();
    let message = clipped(&summary(&violations));
    let mut gateway_error = GatewayError::invalid_argument(message);
    let own = prost_types::Any {
        type_url: "type.googleapis.com/buf.validate.Violations".into(),
        value: error.to_proto().encode_to_vec(),
    };
    let details = status::bad_request_status_with(
        gateway_error.code,
        &gateway_error.message,
        violations,
        vec![own],
    );
    gateway_error.extra = Some(Box::new(ErrorExtra {
        status_details: Some(details),
        upstream_headers: None,
        upstream_trailers: None,
        allow: None,
    }));
    gateway_error
}

/// What a violation says: its message, else the rule's id.
fn description(violation: &prost_protovalidate::Violation) -> &str {
    match violation.message() {
        "" => violation.rule_id(),
        message => message,
    }
}

/// `validation failed: name: value length must be at least 3 characters; ...`.
fn summary(violations: &[FieldViolation]) -> String {
    let each: Vec<String> = violations
        .iter()
        .map(|v| match v.field.as_str() {
            "" => v.description.clone(),
            field => format!("{field}: {}", v.description),
        })
        .collect();
    format!("validation failed: {}", each.join("; "))
}

/// The request message inside one gRPC frame (its 5-byte header skipped).
pub fn frame_payload(frame: &Bytes) -> &[u8] {
    frame
        .get(crate::grpc::frame::HEADER_LEN..)
        .unwrap_or_default()
}
