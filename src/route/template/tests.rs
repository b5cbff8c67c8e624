use super::*;
use proptest::prelude::*;

fn lit(s: &str) -> Segment {
    Segment::Literal(s.to_owned())
}

fn var(path: &[&str], start: usize, end: usize) -> Variable {
    let field_path = path.iter().map(|s| (*s).to_owned()).collect();
    Variable {
        field_path,
        start,
        end,
    }
}

fn parse_ok(s: &str) -> Template {
    parse(s).unwrap_or_else(|e| panic!("{s} should parse: {e}"))
}

/// Asserts that `s` is rejected at byte `position` with a reason containing `reason`.
fn assert_rejected(s: &str, position: usize, reason: &str) {
    let err = parse(s).expect_err(s);
    assert_eq!(err.template, s);
    assert_eq!(err.position, position, "{s}: {err}");
    assert!(err.reason.contains(reason), "{s}: {err}");
}

// --- the examples of google/api/http.proto ---

#[test]
fn single_variable() {
    let t = parse_ok("/v1/messages/{message_id}");
    assert_eq!(t.segments, [lit("v1"), lit("messages"), Segment::Wildcard]);
    assert_eq!(t.variables, [var(&["message_id"], 2, 3)]);
    assert_eq!(t.verb, None);
    assert!(t.variables[0].is_single_segment(&t));
    assert!(!t.variables[0].captures_rest(&t));
}

#[test]
fn variable_with_pattern() {
    let t = parse_ok("/v1/{name=messages/*}");
    assert_eq!(t.segments, [lit("v1"), lit("messages"), Segment::Wildcard]);
    assert_eq!(t.variables, [var(&["name"], 1, 3)]);
    assert!(!t.variables[0].is_single_segment(&t));
}

#[test]
fn two_variables() {
    let t = parse_ok("/v1/users/{user_id}/messages/{message_id}");
    assert_eq!(t.segments.len(), 5);
    assert_eq!(
        t.variables,
        [var(&["user_id"], 2, 3), var(&["message_id"], 4, 5)]
    );
}

#[test]
fn nested_field_path() {
    let t = parse_ok("/v1/messages/{message_id}/{sub.subfield}");
    assert_eq!(t.variables[1], var(&["sub", "subfield"], 3, 4));
    assert_eq!(t.variables[1].dotted(), "sub.subfield");
}

#[test]
fn multi_segment_variable() {
    let t = parse_ok("/v1/{name=shelves/*/books/*}");
    let expected = [
        lit("v1"),
        lit("shelves"),
        Segment::Wildcard,
        lit("books"),
        Segment::Wildcard,
    ];
    assert_eq!(t.segments, expected);
    assert_eq!(t.variables, [var(&["name"], 1, 5)]);
}

#[test]
fn double_wildcard_variable_with_verb() {
    let t = parse_ok("/v1/{name=**}:undelete");
    assert_eq!(t.segments, [lit("v1"), Segment::DoubleWildcard]);
    assert_eq!(t.verb.as_deref(), Some("undelete"));
    assert!(t.variables[0].captures_rest(&t));
    assert!(!t.variables[0].is_single_segment(&t));
}

#[test]
fn verbs_after_variable_and_bare_double_wildcard() {
    let t = parse_ok("/v1/things/{id}:cancel");
    assert_eq!(t.verb.as_deref(), Some("cancel"));
    assert_eq!(t.variables, [var(&["id"], 2, 3)]);
    let t = parse_ok("/v1/**:verb");
    assert_eq!(t.segments, [lit("v1"), Segment::DoubleWildcard]);
    assert!(t.variables.is_empty());
}

#[test]
fn explicit_star_is_single_segment() {
    let t = parse_ok("/v1/{x=*}");
    assert!(t.variables[0].is_single_segment(&t));
    assert_eq!(t.to_string(), "/v1/{x}");
}

#[test]
fn bare_wildcards_and_literal_pattern() {
    let t = parse_ok("/v1/*/{a.b_c=x/**}");
    assert_eq!(
        t.segments,
        [
            lit("v1"),
            Segment::Wildcard,
            lit("x"),
            Segment::DoubleWildcard
        ]
    );
    assert_eq!(t.variables, [var(&["a", "b_c"], 2, 4)]);
    assert!(t.variables[0].captures_rest(&t));
}

#[test]
fn literals_are_normalised() {
    let t = parse_ok("/v1/%61b%2fc/%7E");
    assert_eq!(t.segments, [lit("v1"), lit("ab%2Fc"), lit("~")]);
    assert_eq!(t.to_string(), "/v1/ab%2Fc/~");
    assert_eq!(parse_ok("/a=b@c;d").segments, [lit("a=b@c;d")]);
}

#[test]
fn shape_erases_variable_names() {
    let a = parse_ok("/v1/{name=shelves/*}:get");
    let b = parse_ok("/v1/shelves/{id}:get");
    assert_eq!(a.shape(), b.shape());
    assert_ne!(a.shape(), parse_ok("/v1/shelves/{id}").shape());
}

#[test]
fn display_renders_canonical_form() {
    for s in [
        "/v1/messages/{message_id}",
        "/v1/{name=messages/*}",
        "/v1/messages/{message_id}/{sub.subfield}",
        "/v1/{name=shelves/*/books/*}",
        "/v1/{name=**}:undelete",
        "/v1/**:verb",
        "/*/a/{b=c/*/d}/{e}/**",
    ] {
        assert_eq!(parse_ok(s).to_string(), s);
    }
}

// --- errors ---

#[test]
fn rejects_missing_leading_slash() {
    assert_rejected("", 0, "must start with '/'");
    assert_rejected("v1/a", 0, "must start with '/'");
}

#[test]
fn rejects_root_and_empty_segments() {
    assert_rejected("/", 1, "at least one segment");
    assert_rejected("/a//b", 3, "'//'");
    assert_rejected("/a/", 3, "ends with '/'");
    assert_rejected("/a/:verb", 3, "before the verb");
    assert_rejected("/{x=}", 4, "before '}'");
}

#[test]
fn rejects_double_wildcard_not_last() {
    assert_rejected("/a/**/b", 3, "'**' must be the last");
    assert_rejected("/{x=**}/b", 4, "'**' must be the last");
    assert_rejected("/**/**", 1, "'**' must be the last");
}

#[test]
fn rejects_nested_variables() {
    assert_rejected("/{a={b}}", 4, "nested");
    assert_rejected("/{a=x/{b}}", 6, "nested");
}

#[test]
fn rejects_unclosed_and_unmatched_braces() {
    assert_rejected("/v1/{name", 4, "unclosed '{'");
    assert_rejected("/v1/{name=a/*", 4, "unclosed '{'");
    assert_rejected("/v1/a}", 5, "unmatched '}'");
    assert_rejected("/v1/}", 4, "unmatched '}'");
}

#[test]
fn rejects_bad_identifiers() {
    assert_rejected("/{}", 2, "field name");
    assert_rejected("/{1a}", 2, "field name");
    assert_rejected("/{a.}", 4, "field name");
    assert_rejected("/{a-b}", 3, "expected '=' or '}'");
}

#[test]
fn rejects_duplicate_field_path() {
    assert_rejected("/{a.b}/{a.b}", 7, "'a.b' is bound twice");
    parse_ok("/{a.b}/{a.c}");
}

#[test]
fn rejects_bad_verbs() {
    assert_rejected("/a:", 3, "empty verb");
    assert_rejected("/a:b:c", 4, "cannot contain ':'");
    assert_rejected("/a:b/c", 4, "after the last segment");
    assert_rejected("/{x=a:b}", 5, "inside a variable");
}

#[test]
fn rejects_partial_segments() {
    assert_rejected("/a{x}", 2, "whole segment");
    assert_rejected("/{x}a", 4, "whole segments");
    assert_rejected("/a*", 2, "whole segments");
    assert_rejected("/*a", 2, "whole segments");
    assert_rejected("/***", 3, "whole segments");
}

#[test]
fn rejects_odd_characters_and_escapes() {
    assert_rejected("/a b", 2, "not allowed in a path");
    assert_rejected("/a?b", 2, "not allowed in a path");
    assert_rejected("/caf\u{e9}", 4, "not allowed in a path");
    assert_rejected("/a%2", 2, "two hex digits");
    assert_rejected("/a%G1", 2, "two hex digits");
    assert_rejected("/v1/..", 4, "dot segments");
    assert_rejected("/v1/%2E", 4, "dot segments");
}

// --- properties ---

fn template_chars() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "/", "*", "**", "{", "}", "=", ":", ".", "a", "b", "x.y", "%41", "%", "1", "_", "é",
    ]);
    prop::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
}

proptest! {
    /// Parsing never panics, and whatever parses renders to a string that parses back
    /// to the same template.
    #[test]
    fn parse_display_round_trips(s in template_chars()) {
        if let Ok(t) = parse(&s) {
            let rendered = t.to_string();
            prop_assert_eq!(parse(&rendered), Ok(t));
        }
    }

    /// Arbitrary input never panics and errors point inside (or just past) the input.
    #[test]
    fn parse_never_panics(s in any::<String>()) {
        if let Err(e) = parse(&s) {
            prop_assert!(e.position <= s.len());
        }
    }
}
