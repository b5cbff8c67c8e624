//! Indented output (`--indent-json`), a writer mode of its own: the renderers write compact
//! JSON, and this pass re-indents it the way Go's protojson multiline output does (two
//! spaces, `"key": value`, empty objects and arrays kept as `{}` and `[]`). One pass over
//! the bytes, aware of strings, costs less than keeping two layouts in every writer.

use super::json_error::string_end;

/// `compact` (JSON without insignificant whitespace), indented by two spaces per level.
pub(super) fn indent(compact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact.len() + compact.len() / 2);
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = compact.get(i) {
        match b {
            b'"' => {
                // Just past the closing quote (or the end of a string cut short).
                let end = (string_end(compact, i + 1) + 1).min(compact.len());
                out.extend_from_slice(&compact[i..end]);
                i = end;
                continue;
            }
            b'{' | b'[' if matches!(compact.get(i + 1), Some(b'}' | b']')) => {
                out.extend_from_slice(&compact[i..i + 2]);
                i += 2;
                continue;
            }
            b'{' | b'[' => {
                out.push(b);
                depth += 1;
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

fn newline(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    out.resize(out.len() + 2 * depth, b' ');
}

#[cfg(test)]
mod tests {
    use super::indent;

    fn indented(compact: &str) -> String {
        String::from_utf8(indent(compact.as_bytes())).unwrap()
    }

    #[test]
    fn nests_by_two_spaces() {
        assert_eq!(
            indented(r#"{"i32":1,"list":[{"aB":"x"}],"m":{}}"#),
            "{\n  \"i32\": 1,\n  \"list\": [\n    {\n      \"aB\": \"x\"\n    }\n  ],\n  \"m\": {}\n}"
        );
    }

    #[test]
    fn leaves_strings_alone() {
        assert_eq!(
            indented(r#"{"a,b":"x:{[\"]}","c":[]}"#),
            "{\n  \"a,b\": \"x:{[\\\"]}\",\n  \"c\": []\n}"
        );
    }

    #[test]
    fn scalars_and_empty_containers_stay_as_they_are() {
        assert_eq!(indented("{}"), "{}");
        assert_eq!(indented("[]"), "[]");
        assert_eq!(indented(r#""s""#), r#""s""#);
        assert_eq!(indented("-1.5e+21"), "-1.5e+21");
    }
}
