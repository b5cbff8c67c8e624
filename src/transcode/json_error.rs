//! What a client is told when its JSON is refused: where (the field path as the client wrote
//! it, and from the request message's root in a `google.rpc.BadRequest` detail), what was
//! wrong in words of the JSON mapping, and at most a bounded slice of the input
//! ([`clipped_to`]). Both JSON paths refuse through here, so they say the same.

use crate::error::{clipped_to, GatewayError, ECHO_LIMIT};
use crate::grpc::status::FieldViolation;

/// Where in the body an error is: the path as the client wrote it (`stCamera.imgData`,
/// `tags[2]`; empty at the top), and the root-relative prefix of the body (`shelf.` for a
/// `body: "shelf"` binding; empty for the whole message).
#[derive(Debug, Clone, Copy)]
pub(super) struct Place<'a> {
    pub path: &'a str,
    pub prefix: &'a str,
}

/// A JSON body refused by serde_json or a visitor, at `place`: the message names the type, the
/// field and the position, and carries a `google.rpc.BadRequest` detail for the field.
pub(super) fn invalid_body(
    type_name: &str,
    place: Place<'_>,
    error: &serde_json::Error,
) -> GatewayError {
    let description = json_error(error);
    let field = match (place.prefix, place.path) {
        (prefix, "") => prefix.trim_end_matches('.').to_string(),
        (prefix, path) => format!("{prefix}{path}"),
    };
    let message = match place.path {
        "" => format!("invalid JSON body for {type_name}: {description}"),
        path => format!(
            "invalid JSON body for {type_name}: {}: {description}",
            clip(path)
        ),
    };
    let violation = FieldViolation {
        field: clip(&field),
        description,
    };
    GatewayError::bad_request(message, vec![violation])
}

/// A serde_json error's text in the mapping's words, clipped, its position kept.
pub(super) fn json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if error.line() == 0 {
        return clip(&plain(&text));
    }
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = text.strip_suffix(&position).unwrap_or(&text);
    format!("{}{position}", clip(&plain(message)))
}

/// The share of an answer one text may take: it is said twice (message and detail).
fn clip(text: &str) -> String {
    clipped_to(text, 2 * ECHO_LIMIT)
}

/// The base64 decoder's messages (`Invalid symbol 42, offset 0.`) in the mapping's words.
fn plain(message: &str) -> String {
    let base64 = |rest: &str| {
        let rest = rest.trim_end_matches('.');
        let (symbol, offset) = rest.split_once(", offset ")?;
        let byte: u8 = symbol.trim().parse().ok()?;
        let shown = char::from(byte).escape_default().to_string();
        Some(format!(
            "invalid base64: unexpected {shown:?} at byte {offset}"
        ))
    };
    let message = message.strip_prefix("invalid base64: ").unwrap_or(message);
    let rewritten = match message {
        m if m.starts_with("Invalid symbol ") => base64(&m["Invalid symbol ".len()..]),
        m if m.starts_with("Invalid last symbol ") => base64(&m["Invalid last symbol ".len()..]),
        "Invalid padding" | "Invalid padding." => Some("invalid base64: bad padding".into()),
        m if m.starts_with("Invalid input length") => {
            Some("invalid base64: the length is not valid".into())
        }
        "out of range integral type conversion attempted" => {
            Some("the number is out of range for the field's type".into())
        }
        _ => None,
    };
    rewritten.unwrap_or_else(|| message.to_string())
}

/// Refuses JSON nested deeper than `max` objects and arrays, before parsing it. Strings are
/// skipped with a vectorised search for their end, so a large base64 value costs little.
pub(super) fn check_depth(body: &[u8], max: usize) -> Result<(), GatewayError> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => i = string_end(body, i + 1),
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(GatewayError::invalid_argument(format!(
                        "invalid JSON body: nested deeper than {max} levels at byte {i}"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index of the quote closing a string whose content starts at `from` (or the end).
pub(super) fn string_end(body: &[u8], mut from: usize) -> usize {
    while let Some(rest) = body.get(from..) {
        match memchr::memchr2(b'"', b'\\', rest) {
            None => return body.len(),
            Some(at) if rest[at] == b'"' => return from + at,
            Some(at) => from += at + 2,
        }
    }
    body.len()
}
