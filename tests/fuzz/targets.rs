//! The fuzz targets, shared by the libFuzzer harness (`fuzz/`, `cargo fuzz`, nightly) and the
//! stable corpus run (`tests/it/fuzz_targets.rs`, part of `cargo test`).
//!
//! Each target takes arbitrary bytes and, besides not panicking, checks an oracle: parsed
//! templates render and re-parse to themselves and match the paths they describe; the matcher
//! agrees with a naive reference matcher and decoder; a request message that is accepted
//! renders to JSON that parses back to the same message, and one that is refused is a 400
//! with a well-formed `google.rpc.Status` body; the frame decoder gives the same frames
//! however the stream is cut; `grpc-timeout` agrees with the grammar.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use protogate::descriptor::Sources;
use protogate::error::GatewayError;
use protogate::grpc::{frame, status, timeout, Code};
use protogate::route::matcher::Matcher;
use protogate::route::template::{self, Segment, Template};
use protogate::route::{Lookup, MethodSel, RouteOptions, Unescape};
use protogate::snapshot::Snapshot;
use protogate::transcode::{
    fast_request, message_to_json, request_message, JsonOptions, RequestInput,
};

/// A fuzz target: arbitrary bytes in, a panic on a bug.
pub(crate) type Target = fn(&[u8]);

/// Every target, by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus folders).
pub(crate) const TARGETS: &[(&str, Target)] = &[
    ("template", template),
    ("matcher", matcher),
    ("json_request", json_request),
    ("json_response", json_response),
    ("query", query),
    ("frame", frame),
    ("grpc_timeout", grpc_timeout),
    ("percent_decode", percent_decode),
];

/// Tokens worth splicing into inputs of each target (the stable run's mutator uses them).
pub(crate) fn dictionary(target: &str) -> &'static [&'static str] {
    match target {
        "template" => &[
            "/", "{", "}", "=", "*", "**", ":", ".", "%", "%2F", "%2f", "%41", "%zz", "{a}",
            "{a.b=*}", "{x=**}", ":verb", "..", "_", "9",
        ],
        "matcher" | "percent_decode" => &[
            "/",
            "//",
            "%",
            "%2F",
            "%2f",
            "%25",
            "%00",
            "%FF",
            "%C3%A9",
            "%E2%82",
            ":",
            ":title",
            ":undelete",
            ":cancel",
            "..",
            ".",
            "v1",
            "v2",
            "books",
            "shelves",
            "files",
            "things",
            "?",
            "#",
            "é",
            "\u{0}",
        ],
        "json_request" => &[
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            "null",
            "true",
            "false",
            "-0",
            "1e999",
            "-1e999",
            "1e39",
            "4294967296",
            "-2147483649",
            "9223372036854775808",
            "18446744073709551616",
            "1.5",
            "\"NaN\"",
            "\"Infinity\"",
            "\"-Infinity\"",
            "\\u0000",
            "\\ud800",
            "\\\"",
            "\"fInt32\"",
            "\"fFloat\"",
            "\"fBytes\"",
            "\"fEnum\"",
            "\"fMessage\"",
            "\"rMessage\"",
            "\"mInt32\"",
            "\"mBool\"",
            "\"wAny\"",
            "\"@type\"",
            "\"type.googleapis.com/fuzzapi.v1.Kinds\"",
            "\"type.googleapis.com/google.protobuf.Duration\"",
            "\"wStruct\"",
            "\"wValue\"",
            "\"wTimestamp\"",
            "\"1970-01-01T00:00:00Z\"",
            "\"9999-12-31T23:59:59.999999999Z\"",
            "\"wDuration\"",
            "\"315576000000.999999999s\"",
            "\"wFieldMask\"",
            "\"a.b,cD\"",
            "\"RED\"",
            "\"BLUE\"",
            "\"oString\"",
            "\"oMessage\"",
            "\"AAEC\"",
            "\"-_8=\"",
        ],
        "query" => &[
            "&",
            "=",
            "%",
            "+",
            ".",
            "[",
            "]",
            "f_int32",
            "fInt32",
            "f_message.f_int32",
            "fMessage.fMessage.fString",
            "r_int32",
            "m_string[k]",
            "m_int32[-1]",
            "m_bool[true]",
            "f_enum=RED",
            "w_timestamp",
            "w_duration",
            "w_field_mask",
            "w_int64",
            "w_bytes",
            "f_bytes",
            "o_string",
            "o_enum",
            "f_float=1e39",
            "f_double=NaN",
            "%00",
            "%FF",
            "f_string",
            "id",
            "ids",
            "labels[a]",
            "note",
            "kinds.f_int32",
        ],
        "frame" => &[
            "\u{0}\u{0}\u{0}\u{0}\u{0}",
            "\u{1}\u{0}\u{0}\u{0}\u{1}",
            "\u{ff}",
        ],
        "grpc_timeout" => &["H", "M", "S", "m", "u", "n", "99999999", "0", "-", " "],
        _ => &[],
    }
}

// === Shared checks ===

/// A refused request: 400 `INVALID_ARGUMENT` with a message, rendered as a well-formed
/// `google.rpc.Status` body.
#[track_caller]
fn assert_client_error(error: &GatewayError) {
    assert_eq!(error.code, Code::InvalidArgument, "{error:?}");
    assert_eq!(error.status(), 400, "{error:?}");
    assert!(!error.message.is_empty(), "{error:?}");
    let body: serde_json::Value =
        serde_json::from_slice(&error.to_json()).expect("the error body is JSON");
    assert_eq!(body["code"], 3);
    assert_eq!(body["message"].as_str(), Some(error.message.as_str()));
    assert!(body["details"].is_array());
}

/// A reference percent-decoder for one path segment: `Err` on a malformed escape or a result
/// that is not UTF-8; escapes of bytes in `keep` stay as written.
fn reference_decode(seg: &str, keep: &[u8]) -> Result<String, ()> {
    let bytes = seg.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(())?;
        let text = std::str::from_utf8(hex).map_err(|_| ())?;
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        let byte = u8::from_str_radix(text, 16).map_err(|_| ())?;
        if keep.contains(&byte) {
            out.extend_from_slice(&bytes[i..i + 3]);
        } else {
            out.push(byte);
        }
        i += 3;
    }
    String::from_utf8(out).map_err(|_| ())
}

/// The escapes each mode keeps as written.
fn kept(mode: Unescape) -> &'static [u8] {
    match mode {
        Unescape::AllExceptSlash => b"/",
        Unescape::AllExceptReserved => b":/?#[]@!$&'()*+,;=",
        Unescape::All => b"",
    }
}

/// The normalisation the matcher applies to literals: escapes of unreserved characters
/// decoded, other escapes upper-cased, a malformed `%` left alone.
fn reference_normalize(seg: &str) -> String {
    let bytes = seg.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| bytes[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        match hex {
            Some(h) => {
                let byte = u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap();
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(char::from(byte));
                } else {
                    out.push('%');
                    out.push_str(&std::str::from_utf8(h).unwrap().to_ascii_uppercase());
                }
                i += 3;
            }
            None => {
                let c = seg[i..].chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Whether `segs` (raw request segments) match the template's segments, naively.
fn segments_match(template: &[Segment], segs: &[&str]) -> bool {
    match template.split_first() {
        None => segs.is_empty(),
        Some((Segment::DoubleWildcard, rest)) => {
            rest.is_empty() && segs.iter().all(|s| !s.is_empty())
        }
        Some((segment, rest)) => match segs.split_first() {
            None => false,
            Some((seg, more)) => {
                let here = match segment {
                    Segment::Literal(l) => reference_normalize(seg) == *l,
                    _ => !seg.is_empty(),
                };
                here && segments_match(rest, more)
            }
        },
    }
}

/// The raw segments of `path` that `template` would be matched against, and whether it
/// matches: with the verb split off when the template has one.
fn reference_match<'p>(template: &Template, path: &'p str) -> Option<Vec<&'p str>> {
    let rest = path.strip_prefix('/')?;
    let head = match &template.verb {
        None => rest,
        Some(verb) => {
            let last = rest.rfind('/').map_or(0, |i| i + 1);
            let colon = last + rest[last..].rfind(':')?;
            if reference_normalize(&rest[colon + 1..]) != *verb {
                return None;
            }
            &rest[..colon]
        }
    };
    let segs: Vec<&str> = if head.is_empty() {
        Vec::new()
    } else {
        head.split('/').collect()
    };
    segments_match(&template.segments, &segs).then_some(segs)
}

/// The values the matcher should capture for `template` from `segs`, by the reference
/// decoder; `Err` when one of them cannot be decoded.
fn reference_captures(
    template: &Template,
    segs: &[&str],
    mode: Unescape,
) -> Result<Vec<String>, ()> {
    template
        .variables
        .iter()
        .map(|v| {
            let end = if v.captures_rest(template) {
                segs.len()
            } else {
                v.end
            };
            let raw = &segs[v.start..end];
            if v.is_single_segment(template) {
                reference_decode(raw[0], b"")
            } else {
                let parts: Result<Vec<String>, ()> = raw
                    .iter()
                    .map(|s| reference_decode(s, kept(mode)))
                    .collect();
                Ok(parts?.join("/"))
            }
        })
        .collect()
}

// === Path templates ===

/// A path that `template` matches: `*` as `x`, `**` as `a/b`, literals and the verb as
/// written (normalised).
fn instantiate(template: &Template) -> String {
    let mut path = String::new();
    for segment in &template.segments {
        path.push('/');
        match segment {
            Segment::Literal(l) => path.push_str(l),
            Segment::Wildcard => path.push('x'),
            Segment::DoubleWildcard => path.push_str("a/b"),
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    if let Some(verb) = &template.verb {
        path.push(':');
        path.push_str(verb);
    }
    path
}

/// The template parser: a parsed template renders canonically, re-parses to itself, and
/// matches the paths it describes with the right captures; a refused one names a position
/// inside the text.
pub(crate) fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = match template::parse(text) {
        Ok(t) => t,
        Err(e) => {
            assert!(e.position <= text.len(), "{e}");
            assert!(!e.reason.is_empty());
            return;
        }
    };
    for v in &parsed.variables {
        assert!(
            v.start < v.end && v.end <= parsed.segments.len(),
            "{parsed:?}"
        );
        assert!(!v.field_path.is_empty());
    }
    let last = parsed.segments.len().saturating_sub(1);
    for (i, s) in parsed.segments.iter().enumerate() {
        assert!(*s != Segment::DoubleWildcard || i == last, "{parsed:?}");
    }
    let rendered = parsed.to_string();
    let again = template::parse(&rendered)
        .unwrap_or_else(|e| panic!("{text:?} renders as {rendered:?}, which does not parse: {e}"));
    assert_eq!(again, parsed, "{text:?} -> {rendered:?}");
    assert_eq!(again.to_string(), rendered);

    let mut matcher = Matcher::new();
    matcher
        .insert(MethodSel::Method(Method::GET), &parsed, ())
        .expect("one route never conflicts");
    let path = instantiate(&parsed);
    let segs = reference_match(&parsed, &path)
        .unwrap_or_else(|| panic!("{path:?} should match {rendered:?} by the reference"));
    match (
        matcher.lookup(&Method::GET, &path),
        reference_captures(&parsed, &segs, Unescape::default()),
    ) {
        (Lookup::Found { vars, .. }, Ok(expected)) => {
            assert_eq!(vars.to_vec(), expected, "{rendered:?} on {path:?}")
        }
        (Lookup::BadPath(_), Err(())) => {}
        (other, expected) => {
            panic!("{rendered:?} on {path:?}: got {other:?}, reference {expected:?}")
        }
    }
    assert_eq!(
        matcher.lookup(&Method::POST, &path),
        Lookup::MethodNotAllowed {
            allowed: vec![Method::GET]
        },
        "{rendered:?} on {path:?}"
    );
}

// === The matcher ===

/// Templates covering every form: literals, `*`, `**`, variables over runs, verbs, escapes,
/// overlapping shapes, and a route for every method.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/{name=shelves/*/books/*}"),
    ("GET", "/v2/books/{name}"),
    ("GET", "/v1/{name=shelves/*/books/*}:title"),
    ("GET", "/v1/shelves/{shelf}/books"),
    ("GET", "/v1/shelves"),
    ("POST", "/v1/shelves/{shelf}/books"),
    ("PATCH", "/v1/{book.name=shelves/*/books/*}"),
    ("DELETE", "/v1/shelves/{shelf}/books/{book_id}"),
    ("PUT", "/v1/books/{name}"),
    ("POST", "/v1/{name=**}:undelete"),
    ("GET", "/v1/files/{name=**}"),
    ("POST", "/v1/things/{name}:cancel"),
    ("GET", "/v1/things/{name}"),
    ("SEARCH", "/v1/books:search"),
    ("*", "/v1/any/{name}"),
    ("GET", "/v1/any/{name}"),
    ("GET", "/v1/{name=shelves/*}/count"),
    ("PUT", "/v1/tags/{tags}/{sub.label}"),
    ("GET", "/v1/raw/{name}"),
    ("GET", "/v1/a%20b/{x=c/**}"),
    ("GET", "/v1/%7Euser/*/{y}"),
    ("GET", "/v1/*/literal"),
    ("GET", "/v1/*/*/**"),
    ("GET", "/{root}"),
    ("POST", "/skvps/locdata"),
];

struct Matchers {
    templates: Vec<(MethodSel, Template)>,
    by_mode: Vec<(Unescape, Matcher<usize>)>,
}

fn method_sel(name: &str) -> MethodSel {
    match name {
        "*" => MethodSel::Any,
        m => MethodSel::Method(Method::from_bytes(m.as_bytes()).unwrap()),
    }
}

fn matchers() -> &'static Matchers {
    static MATCHERS: OnceLock<Matchers> = OnceLock::new();
    MATCHERS.get_or_init(|| {
        let templates: Vec<(MethodSel, Template)> = ROUTES
            .iter()
            .map(|(m, t)| (method_sel(m), template::parse(t).unwrap()))
            .collect();
        let by_mode = [
            Unescape::AllExceptSlash,
            Unescape::AllExceptReserved,
            Unescape::All,
        ]
        .into_iter()
        .map(|mode| {
            let mut matcher = Matcher::new();
            matcher.set_unescape(mode);
            for (i, (m, t)) in templates.iter().enumerate() {
                matcher.insert(m.clone(), t, i).unwrap();
            }
            (mode, matcher)
        })
        .collect();
        Matchers { templates, by_mode }
    })
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "SEARCH", "OPTIONS", "HEAD", "X-ODD",
];

/// The matcher on arbitrary paths: a match is one the reference matcher agrees with, under
/// the request's method or `*`, with the reference captures; 405 lists only methods whose
/// templates match and never the request's own; 404 means no template matches at all.
pub(crate) fn matcher(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let m = matchers();
    let method = Method::from_bytes(METHODS[usize::from(selector) % METHODS.len()].as_bytes())
        .expect("a valid method");
    let (mode, matcher) = &m.by_mode[usize::from(selector / 16) % m.by_mode.len()];
    let mut matching: Vec<(usize, Vec<&str>)> = m
        .templates
        .iter()
        .enumerate()
        .filter_map(|(i, (_, t))| reference_match(t, path).map(|segs| (i, segs)))
        .collect();
    // A path that a verb template matches is that verb's path, under every method.
    if matching
        .iter()
        .any(|(i, _)| m.templates[*i].1.verb.is_some())
    {
        matching.retain(|(i, _)| m.templates[*i].1.verb.is_some());
    }
    let answers =
        |sel: &MethodSel| *sel == MethodSel::Any || *sel == MethodSel::Method(method.clone());
    match matcher.lookup(&method, path) {
        Lookup::Found {
            value,
            template,
            vars,
        } => {
            let (sel, t) = &m.templates[*value];
            assert_eq!(t, template);
            assert!(answers(sel), "{method} {path:?} matched a {sel} route");
            let segs = reference_match(t, path)
                .unwrap_or_else(|| panic!("{method} {path:?} matched {t} wrongly"));
            let expected = reference_captures(t, &segs, *mode)
                .unwrap_or_else(|()| panic!("{path:?} on {t}: captures should not decode"));
            assert_eq!(vars.to_vec(), expected, "{path:?} on {t} ({mode:?})");
        }
        Lookup::BadPath(message) => {
            assert!(!message.is_empty());
            let undecodable = matching.iter().any(|(i, segs)| {
                answers(&m.templates[*i].0)
                    && reference_captures(&m.templates[*i].1, segs, *mode).is_err()
            });
            assert!(
                undecodable,
                "{method} {path:?}: BadPath({message}) without a bad capture"
            );
        }
        Lookup::MethodNotAllowed { allowed } => {
            assert!(!allowed.is_empty());
            assert!(!allowed.contains(&method), "{method} {path:?}: {allowed:?}");
            assert!(
                !matching.iter().any(|(i, _)| answers(&m.templates[*i].0)),
                "{method} {path:?}: 405 although a route answers {method}"
            );
            for a in &allowed {
                let sel = MethodSel::Method(a.clone());
                assert!(
                    matching.iter().any(|(i, _)| m.templates[*i].0 == sel),
                    "{path:?}: {a} allowed without a matching route"
                );
            }
        }
        Lookup::NotFound => {
            let names: Vec<String> = matching
                .iter()
                .map(|(i, _)| m.templates[*i].1.to_string())
                .collect();
            assert!(
                names.is_empty(),
                "{method} {path:?}: 404 but {names:?} match"
            );
        }
    }
}

// === Request messages from JSON and query strings ===

struct Api {
    snapshot: Snapshot,
    lenient: JsonOptions,
    strict: JsonOptions,
    /// `fuzzapi.v1.Kinds`, which the fast paths handle.
    kinds: MessageDescriptor,
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let protos = if root.join("tests/fuzz/protos").is_dir() {
            root.join("tests/fuzz/protos")
        } else {
            root.join("../tests/fuzz/protos")
        };
        let sources = Sources {
            protos: vec!["fuzzapi/v1/kinds.proto".into()],
            includes: vec![protos],
            ..Sources::default()
        };
        let snapshot =
            Snapshot::build(&sources, &RouteOptions::default(), None).expect("the fuzz API loads");
        let strict = JsonOptions {
            reject_unknown_fields: true,
            reject_unknown_query: true,
            ..JsonOptions::default()
        };
        let kinds = snapshot
            .pool
            .get_message_by_name("fuzzapi.v1.Kinds")
            .expect("Kinds");
        assert!(snapshot.schemas.handles(&kinds), "Kinds has a renderer");
        Api {
            snapshot,
            lenient: JsonOptions::default(),
            strict,
            kinds,
        }
    })
}

/// What the REST handler does with a request before calling the upstream: route it and
/// assemble the request message.
fn assemble(
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    options: &JsonOptions,
) -> Result<DynamicMessage, GatewayError> {
    let api = api();
    let (plan, vars) = match api.snapshot.routes.lookup(method, path) {
        Lookup::Found { value, vars, .. } => (value.clone(), vars),
        other => panic!("{method} {path}: {other:?}"),
    };
    let body = Bytes::copy_from_slice(body);
    let input = RequestInput {
        body: &body,
        content_type: Some("application/json"),
        vars: &vars,
        query,
        form: None,
    };
    request_message(&plan, options, input)
}

/// An accepted message survives the trip upstream and back: it encodes and decodes, renders
/// as JSON, and that JSON parses back to a message rendering the same.
fn check_accepted(message: &DynamicMessage, options: &JsonOptions) {
    let encoded = message.encode_to_vec();
    if message.descriptor() == api().kinds {
        for bits in [0, 0x0f] {
            check_renderers(&encoded, &output_options(bits));
        }
    }
    let decoded = DynamicMessage::decode(message.descriptor(), encoded.as_slice())
        .expect("an accepted message decodes");
    let render = |m: &DynamicMessage| {
        let mut out = Vec::new();
        message_to_json::write_message(&mut out, m, options)
            .unwrap_or_else(|e| panic!("an accepted message has no JSON form: {e}: {m}"));
        out
    };
    let first = render(message);
    assert_eq!(
        String::from_utf8_lossy(&render(&decoded)),
        String::from_utf8_lossy(&first),
        "encoding changed the message"
    );
    if message.fields().any(|(_, v)| has_irreversible_mask(v)) {
        // Go's protojson refuses to write such a mask; protogate writes it, lossily.
        return;
    }
    let mut de = serde_json::Deserializer::from_slice(&first);
    let reparsed = DynamicMessage::deserialize(message.descriptor(), &mut de).unwrap_or_else(|e| {
        panic!(
            "rendered JSON is refused: {e}: {}",
            String::from_utf8_lossy(&first)
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&render(&reparsed)),
        String::from_utf8_lossy(&first),
        "JSON round trip changed the message"
    );
}

/// Output options from a byte: proto names, unpopulated fields left out, enums as numbers,
/// 64-bit integers as numbers, each by one bit.
fn output_options(bits: u8) -> JsonOptions {
    JsonOptions {
        use_proto_names: bits & 1 != 0,
        emit_unpopulated: bits & 2 == 0,
        enums_as_ints: bits & 4 != 0,
        int64_as_numbers: bits & 8 != 0,
        ..JsonOptions::default()
    }
}

/// Upstream bytes as a `Kinds` response: where the direct wire-to-JSON renderer writes JSON,
/// the reference path (decoding, then `message_to_json`) accepts the bytes and writes the same JSON.
/// The first byte picks the output options.
pub(crate) fn json_response(data: &[u8]) {
    let Some((&bits, wire)) = data.split_first() else {
        return;
    };
    check_renderers(wire, &output_options(bits));
}

/// Whether the direct wire-to-JSON renderer takes `data`, a `json_response` input.
pub(crate) fn json_response_renders(data: &[u8]) -> bool {
    data.split_first().is_some_and(|(&bits, wire)| {
        let api = api();
        let options = output_options(bits);
        let mut out = Vec::new();
        let rendered = api
            .snapshot
            .schemas
            .render_fast(&api.kinds, wire, &options, &mut out);
        rendered.is_ok()
    })
}

fn check_renderers(wire: &[u8], options: &JsonOptions) {
    let api = api();
    let mut fast = Vec::new();
    let schemas = &api.snapshot.schemas;
    if schemas
        .render_fast(&api.kinds, wire, options, &mut fast)
        .is_err()
    {
        return;
    }
    let message = DynamicMessage::decode(api.kinds.clone(), wire)
        .unwrap_or_else(|e| panic!("rendered, but the reference path cannot decode it: {e}"));
    let mut reference = Vec::new();
    if let Err(e) = message_to_json::write_message(&mut reference, &message, options) {
        panic!("rendered, but the reference path cannot: {e}");
    }
    assert_eq!(
        String::from_utf8_lossy(&fast),
        String::from_utf8_lossy(&reference),
        "the renderers differ"
    );
}

/// Whether a value holds a `FieldMask` path with no exact JSON form: one that protojson's
/// lowerCamel conversion does not reverse (`_`, `a_1`, `fooBar`, `a__b`, ...).
fn has_irreversible_mask(value: &Value) -> bool {
    match value {
        Value::List(items) => items.iter().any(has_irreversible_mask),
        Value::Map(map) => map.values().any(has_irreversible_mask),
        Value::Message(m) if m.descriptor().full_name() == "google.protobuf.FieldMask" => m
            .get_field_by_name("paths")
            .and_then(|p| p.as_list().map(|l| l.to_vec()))
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_str)
            .any(|path| snake_case(&camel_case(path)) != path),
        Value::Message(m) => m.fields().any(|(_, v)| has_irreversible_mask(v)),
        _ => false,
    }
}

/// Go protojson's `JSONCamelCase`.
fn camel_case(s: &str) -> String {
    let mut out = String::new();
    let mut after_underscore = false;
    for c in s.chars() {
        if c != '_' {
            if after_underscore && c.is_ascii_lowercase() {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        after_underscore = c == '_';
    }
    out
}

/// Go protojson's `JSONSnakeCase`.
fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

const JSON_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/all/p"),
    ("POST", "/v1/field/p"),
    ("POST", "/v1/repeated/p"),
    ("POST", "/v1/map/p"),
    ("POST", "/v1/scalar/p"),
    ("PATCH", "/v1/patch/p"),
];

/// A `json_request` input: the route its selector byte picks, the options (strict, unknown
/// fields refused, when the high bit is set), and the body.
fn json_case(data: &[u8]) -> Option<(Method, &'static str, &'static JsonOptions, &[u8])> {
    let (&selector, body) = data.split_first()?;
    let api = api();
    let (method, path) = JSON_ROUTES[usize::from(selector & 0x7f) % JSON_ROUTES.len()];
    let options = if selector & 0x80 != 0 {
        &api.strict
    } else {
        &api.lenient
    };
    Some((
        Method::from_bytes(method.as_bytes()).unwrap(),
        path,
        options,
        body,
    ))
}

/// JSON bodies into request messages, for each way a body is bound, through the reference
/// path and the direct JSON-to-wire encoder.
pub(crate) fn json_request(data: &[u8]) {
    let Some((method, path, options, body)) = json_case(data) else {
        return;
    };
    let reference = assemble(&method, path, None, body, options);
    check_fast_path(
        &fast_frame(&method, path, None, body, options),
        &reference,
        options,
    );
    match reference {
        Ok(message) => {
            let text = String::from_utf8_lossy(body);
            check_numbers(&message, &text, text.contains("\\u"));
            check_accepted(&message, options);
        }
        Err(e) => assert_client_error(&e),
    }
}

/// Whether `data`, a `json_request` input, is accepted by the direct JSON-to-wire encoder (so
/// that the target compares it with the reference path).
pub(crate) fn json_request_takes_fast_path(data: &[u8]) -> bool {
    json_case(data).is_some_and(|(method, path, options, body)| {
        matches!(
            fast_frame(&method, path, None, body, options).1,
            Ok(Some(_))
        )
    })
}

/// How a `json_request` input is refused: by the reference path (its message), and by the
/// direct encoder (its message, `None` when it declined the body or gave a frame).
pub(crate) fn json_request_refusals(data: &[u8]) -> Option<(String, Option<String>)> {
    let (method, path, options, body) = json_case(data)?;
    let reference = assemble(&method, path, None, body, options).err()?;
    let fast = fast_frame(&method, path, None, body, options).1.err();
    Some((reference.message, fast.map(|e| e.message)))
}

/// The request frame for `body` through the direct JSON-to-wire encoder, with its route's
/// request type.
fn fast_frame(
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    options: &JsonOptions,
) -> (MessageDescriptor, Result<Option<Bytes>, GatewayError>) {
    let Lookup::Found {
        value: plan, vars, ..
    } = api().snapshot.routes.lookup(method, path)
    else {
        panic!("{method} {path}: no route");
    };
    let body = Bytes::copy_from_slice(body);
    let input = RequestInput {
        body: &body,
        content_type: Some("application/json"),
        vars: &vars,
        query,
        form: None,
    };
    (
        plan.input.clone(),
        fast_request(plan, &api().snapshot.schemas, options, &input)
            .map(|frame| frame.map(|frame| frame.to_bytes())),
    )
}

/// The direct JSON-to-wire encoder against the reference path: where it gives a frame, the
/// reference path accepts the body too and the frame holds the same message; where it
/// refuses the body (a key given twice), the reference path refuses it with the same message.
fn check_fast_path(
    (input_type, fast): &(MessageDescriptor, Result<Option<Bytes>, GatewayError>),
    reference: &Result<DynamicMessage, GatewayError>,
    options: &JsonOptions,
) {
    let fast = match fast {
        Ok(Some(frame)) => frame,
        Ok(None) => return,
        Err(e) => {
            let Err(expected) = reference else {
                panic!("only the fast path refused the body: {e:?}");
            };
            assert_eq!(
                e.message, expected.message,
                "the paths refuse it differently"
            );
            return;
        }
    };
    let expected = match reference {
        Ok(message) => message,
        Err(e) => panic!("the fast path accepted a body the reference path refuses: {e:?}"),
    };
    let payload = fast.slice(frame::HEADER_LEN..);
    let got =
        DynamicMessage::decode(input_type.clone(), payload).expect("the fast path's frame decodes");
    let expected = DynamicMessage::decode(input_type.clone(), expected.encode_to_vec().as_slice())
        .expect("the reference message decodes");
    let render = |m: &DynamicMessage| {
        let mut out = Vec::new();
        message_to_json::write_message(&mut out, m, options).expect("renders");
        String::from_utf8_lossy(&out).into_owned()
    };
    assert_eq!(
        render(&got),
        render(&expected),
        "the fast path built another message"
    );
}

/// Whether a value holds a float or double that is not finite, anywhere inside.
fn has_non_finite(value: &Value) -> bool {
    match value {
        Value::F32(f) => !f.is_finite(),
        Value::F64(f) => !f.is_finite(),
        Value::List(items) => items.iter().any(has_non_finite),
        Value::Map(map) => map.values().any(has_non_finite),
        Value::Message(m) => m.fields().any(|(_, v)| has_non_finite(v)),
        _ => false,
    }
}

/// A number out of range for its field is refused, never stored as infinity: a non-finite
/// value comes only from `NaN` or `Infinity` written as such (`input`, decoded; `escaped`
/// when the input may spell them with escapes).
#[track_caller]
fn check_numbers(message: &DynamicMessage, input: &str, escaped: bool) {
    if message.fields().any(|(_, v)| has_non_finite(v)) {
        assert!(
            escaped || input.contains("NaN") || input.contains("Infinity"),
            "a non-finite number from {input:?}: {}",
            shown(message)
        );
    }
}

/// A message for a failure's text: its JSON, or its text format (a message's `Debug` form
/// takes its descriptors along and can be too deep to print).
fn shown(message: &DynamicMessage) -> String {
    let mut out = Vec::new();
    match message_to_json::write_message(&mut out, message, &JsonOptions::default()) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => message.to_string(),
    }
}

/// `application/x-www-form-urlencoded` decoding, as lenient as the query parser's.
fn form_decode(query: &str) -> String {
    let bytes = query.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| bytes[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        match (bytes[i], hex) {
            (_, Some(h)) => {
                out.push(u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap());
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query strings into request messages: on a query-only route and beside a body field; the
/// path variable always wins over the query.
pub(crate) fn query(data: &[u8]) {
    let Some(case) = query_case(data) else {
        return;
    };
    let (method, path, bound, query, options) = case;
    let reference = assemble(&method, path, Some(&query), QUERY_BODY, options);
    let fast = fast_frame(&method, path, Some(&query), QUERY_BODY, options);
    check_fast_path(&fast, &reference, options);
    let selector = data[0];
    match reference {
        Ok(message) => {
            let value = message.get_field_by_name(bound).unwrap();
            let expected = if selector & 3 == 1 {
                "a/%2F/b"
            } else {
                "pathval"
            };
            assert_eq!(
                value.as_str(),
                Some(expected),
                "the query overrode the path"
            );
            check_numbers(&message, &form_decode(&query), false);
            check_accepted(&message, options);
        }
        Err(e) => assert_client_error(&e),
    }
}

/// The body of every `query` case (read only on the route with a body field).
const QUERY_BODY: &[u8] = b"{\"fInt32\": 7}";

/// A `query` input: its first byte picks the route (low bits) and the options (top bit), the
/// rest is the query string. The method, path, path-bound field, query and options.
fn query_case(
    data: &[u8],
) -> Option<(
    Method,
    &'static str,
    &'static str,
    String,
    &'static JsonOptions,
)> {
    let (&selector, rest) = data.split_first()?;
    let api = api();
    let options = match selector & 0x80 {
        0 => &api.lenient,
        _ => &api.strict,
    };
    let (method, path, bound) = match selector & 3 {
        0 => (Method::GET, "/v1/query/pathval", "f_string"),
        1 => (Method::GET, "/v1/rest/a/%2F/b", "f_string"),
        _ => (Method::POST, "/v1/field/pathval", "id"),
    };
    let query = String::from_utf8_lossy(rest).into_owned();
    Some((method, path, bound, query, options))
}

/// Whether a `query` input is written by the direct query encoder (so that the target
/// compares it with the reference path).
pub(crate) fn query_takes_fast_path(data: &[u8]) -> bool {
    query_case(data).is_some_and(|(method, path, _, query, options)| {
        let fast = fast_frame(&method, path, Some(&query), QUERY_BODY, options);
        matches!(fast.1, Ok(Some(_)))
    })
}

// === gRPC frames ===

/// The frame decoder: the same frames (or the same error) whether the stream arrives whole
/// or cut into chunks; no frame beyond the limit; the frames re-encode to the bytes consumed.
pub(crate) fn frame(data: &[u8]) {
    let [limit_byte, chunk_byte, stream @ ..] = data else {
        return;
    };
    let limit = match limit_byte & 0x80 {
        0 => usize::from(*limit_byte),
        _ => usize::from(*limit_byte & 0x7f) << 12,
    };
    let chunk = usize::from(*chunk_byte).max(1);
    let whole = frame::decode_all(stream, limit);

    let mut decoder = frame::Decoder::new(limit);
    let mut frames = Vec::new();
    let mut error = None;
    'chunks: for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'chunks;
                }
            }
        }
    }
    let chunked = match error {
        Some(e) => Err(e),
        None => decoder.finish().map(|()| frames.clone()),
    };
    assert_eq!(chunked, whole, "chunks of {chunk} bytes, limit {limit}");

    let mut encoded = Vec::new();
    for f in &frames {
        assert!(f.payload.len() <= limit);
        encoded.push(u8::from(f.compressed));
        encoded.extend_from_slice(&(f.payload.len() as u32).to_be_bytes());
        encoded.extend_from_slice(&f.payload);
    }
    assert_eq!(&stream[..encoded.len()], &encoded[..]);
    let rest = &stream[encoded.len()..];
    match &whole {
        Ok(_) => assert!(rest.is_empty()),
        Err(frame::FrameError::BadFlag(flag)) => assert_eq!(Some(flag), rest.first()),
        Err(frame::FrameError::TooLarge { len, .. }) => {
            assert!(*len > limit);
            assert_eq!(
                rest.get(1..5)
                    .map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize),
                Some(*len)
            );
        }
        Err(frame::FrameError::Truncated(n)) => assert_eq!(*n, rest.len()),
        Err(other) => panic!("the decoder alone cannot fail with {other:?}"),
    }
}

// === grpc-timeout ===

/// `grpc-timeout`: a value parses exactly when it is one to eight digits and a unit, to that
/// duration; formatting any duration gives a value that parses to no less than it.
pub(crate) fn grpc_timeout(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let expected = {
        let unit = text.chars().last();
        let digits = unit.map_or("", |u| &text[..text.len() - u.len_utf8()]);
        let n =
            (!digits.is_empty() && digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().unwrap());
        match (n, unit) {
            (Some(n), Some('H')) => Some(Duration::from_secs(n * 3600)),
            (Some(n), Some('M')) => Some(Duration::from_secs(n * 60)),
            (Some(n), Some('S')) => Some(Duration::from_secs(n)),
            (Some(n), Some('m')) => Some(Duration::from_millis(n)),
            (Some(n), Some('u')) => Some(Duration::from_micros(n)),
            (Some(n), Some('n')) => Some(Duration::from_nanos(n)),
            _ => None,
        }
    };
    assert_eq!(timeout::parse(&text), expected, "{text:?}");

    let mut raw = [0u8; 12];
    for (slot, b) in raw.iter_mut().zip(data) {
        *slot = *b;
    }
    let secs = u64::from_le_bytes(raw[..8].try_into().unwrap()) >> (raw[0] % 64);
    let nanos = u32::from_le_bytes(raw[8..].try_into().unwrap()) % 1_000_000_000;
    let d = Duration::new(secs, nanos);
    let formatted = timeout::format(d);
    assert!(formatted.len() <= 9, "{d:?} -> {formatted}");
    let back = timeout::parse(&formatted).unwrap_or_else(|| panic!("{d:?} -> {formatted:?}"));
    if d <= Duration::from_secs(99_999_999 * 3600) {
        assert!(back >= d, "{d:?} -> {formatted} -> {back:?}");
        assert!(back - d < Duration::from_secs(3600), "{d:?} -> {formatted}");
    } else {
        assert_eq!(formatted, "99999999H");
    }
}

// === Percent-decoding ===

/// Percent-decoding of path captures under each mode and of `grpc-message`: the result is
/// the reference decoder's, and a capture that cannot be decoded is a 400, never a 404 or a
/// wrong value.
pub(crate) fn percent_decode(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lenient = {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let hex = data
                .get(i + 1..i + 3)
                .filter(|h| data[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
            match hex {
                Some(h) => {
                    out.push(u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap());
                    i += 3;
                }
                None => {
                    out.push(data[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    assert_eq!(status::decode_message(data), lenient);

    let segment: String = text
        .chars()
        .filter(|c| !matches!(c, '/' | '?' | '#'))
        .collect();
    let multi: String = text.chars().filter(|c| !matches!(c, '?' | '#')).collect();
    let m = percent_matchers();
    for (mode, matcher) in m {
        let path = format!("/p/{segment}");
        match (matcher.lookup(&Method::GET, &path), segment.is_empty()) {
            (Lookup::NotFound, true) => {}
            (Lookup::Found { vars, .. }, false) => {
                let expected = reference_decode(&segment, b"").expect("decodable");
                assert_eq!(vars[0], expected, "{path:?}");
            }
            (Lookup::BadPath(_), false) => {
                assert!(reference_decode(&segment, b"").is_err(), "{path:?}");
            }
            (other, _) => panic!("{path:?}: {other:?}"),
        }
        let path = format!("/m/{multi}");
        let segs: Vec<&str> = multi.split('/').collect();
        let has_empty = multi.is_empty() || segs.iter().any(|s| s.is_empty());
        match (matcher.lookup(&Method::GET, &path), has_empty) {
            (Lookup::NotFound, true) => {}
            (Lookup::Found { vars, .. }, false) => {
                let parts: Vec<String> = segs
                    .iter()
                    .map(|s| reference_decode(s, kept(*mode)).expect("decodable"))
                    .collect();
                assert_eq!(vars[0], parts.join("/"), "{path:?} ({mode:?})");
            }
            (Lookup::BadPath(_), false) => {
                assert!(
                    segs.iter()
                        .any(|s| reference_decode(s, kept(*mode)).is_err()),
                    "{path:?} ({mode:?})"
                );
            }
            (other, _) => panic!("{path:?} ({mode:?}): {other:?}"),
        }
    }
}

fn percent_matchers() -> &'static [(Unescape, Matcher<()>)] {
    static MATCHERS: OnceLock<Vec<(Unescape, Matcher<()>)>> = OnceLock::new();
    MATCHERS.get_or_init(|| {
        [
            Unescape::AllExceptSlash,
            Unescape::AllExceptReserved,
            Unescape::All,
        ]
        .into_iter()
        .map(|mode| {
            let mut matcher = Matcher::new();
            matcher.set_unescape(mode);
            for t in ["/p/{v}", "/m/{v=**}"] {
                let t = template::parse(t).unwrap();
                matcher
                    .insert(MethodSel::Method(Method::GET), &t, ())
                    .unwrap();
            }
            (mode, matcher)
        })
        .collect()
    })
}
