//! `google.api.http` path templates: parsing, validation and canonical rendering.
//!
//! Pure string handling: this module knows nothing about descriptors (field paths are
//! only checked for shape) and nothing about requests (see [`super::matcher`]).
//!
//! ```text
//! Template  = "/" Segments [ Verb ] ;
//! Segments  = Segment { "/" Segment } ;
//! Segment   = "*" | "**" | LITERAL | Variable ;
//! Variable  = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb      = ":" LITERAL ;
//! ```
//!
//! Literals (and verbs) may hold RFC 3986 path characters except `*` and `:`, plus `%XX`
//! escapes. They are stored normalised: escapes of unreserved characters are decoded and
//! the hex digits of the others are upper-cased, the same normalisation the matcher
//! applies to request segments, so `/v1/%61bc` and `/v1/abc` are one template.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

#[cfg(test)]
mod tests;

/// One segment of a template, with variable bindings erased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this (normalised) text.
    Literal(String),
    /// `*`: matches exactly one non-empty segment.
    Wildcard,
    /// `**`: matches zero or more non-empty segments; only ever the last segment.
    DoubleWildcard,
}

/// A `{field.path=...}` binding over a run of [`Template::segments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The dotted field path, split: `"a.b.c"` becomes `["a", "b", "c"]`.
    pub field_path: Vec<String>,
    /// Index of the variable's first segment in [`Template::segments`].
    pub start: usize,
    /// One past the variable's last segment (exclusive).
    pub end: usize,
}

/// A parsed, validated path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The segments after the leading `/`, variables flattened into their patterns.
    pub segments: Vec<Segment>,
    /// The custom verb after the final `:`, normalised like a literal.
    pub verb: Option<String>,
    /// The variable bindings, in the order they appear.
    pub variables: Vec<Variable>,
}

/// Why a template string was rejected, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?} at byte {position}: {reason}")]
pub struct TemplateError {
    /// The template as written.
    pub template: String,
    /// Byte offset of the offending character.
    pub position: usize,
    /// What is wrong there.
    pub reason: String,
}

/// Parses and validates a path template.
///
/// # Errors
///
/// Returns a [`TemplateError`] naming the byte offset and the rule broken: a missing
/// leading `/`, an empty segment, a `**` that is not last, a nested or unclosed variable,
/// a bad field name, a field path bound twice, a misplaced or empty verb, or a character
/// that may not appear in a path.
pub fn parse(template: &str) -> Result<Template, TemplateError> {
    Parser::new(template).parse()
}

// === impl Variable ===

impl Variable {
    /// True when the variable is exactly one `*` segment (`{x}` or `{x=*}`).
    ///
    /// Such values are fully percent-decoded (RFC 6570 simple expansion); all others keep
    /// reserved characters encoded.
    pub fn is_single_segment(&self, t: &Template) -> bool {
        t.segments.get(self.start..self.end) == Some(&[Segment::Wildcard][..])
    }

    /// True when the variable ends in `**` and so captures the rest of the path.
    pub fn captures_rest(&self, t: &Template) -> bool {
        let last = self.end.checked_sub(1).filter(|&i| i >= self.start);
        last.and_then(|i| t.segments.get(i)) == Some(&Segment::DoubleWildcard)
    }

    /// The field path joined with dots, as written in the template.
    pub fn dotted(&self) -> String {
        self.field_path.join(".")
    }
}

// === impl Template ===

impl Template {
    /// The template's shape: segments and verb with variable names erased.
    ///
    /// Two templates with equal shapes match exactly the same paths, so under the same
    /// HTTP method they are a conflict.
    pub fn shape(&self) -> (Vec<Segment>, Option<String>) {
        (self.segments.clone(), self.verb.clone())
    }

    fn fmt_variable(&self, f: &mut fmt::Formatter<'_>, v: &Variable) -> fmt::Result {
        write!(f, "{{{}", v.dotted())?;
        if !v.is_single_segment(self) {
            f.write_str("=")?;
            let segments = self.segments.get(v.start..v.end).unwrap_or_default();
            fmt_segments(f, segments)?;
        }
        f.write_str("}")
    }
}

/// Renders the canonical form: `{x=*}` as `{x}`, literals normalised.
impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Variables are in segment order, so one pass over both renders in linear time.
        let mut variables = self.variables.iter().peekable();
        let mut i = 0;
        while let Some(segment) = self.segments.get(i) {
            f.write_str("/")?;
            if let Some(v) = variables.next_if(|v| v.start == i) {
                self.fmt_variable(f, v)?;
                i = v.end.max(i + 1);
            } else {
                fmt_segment(f, segment)?;
                i += 1;
            }
        }
        match &self.verb {
            Some(verb) => write!(f, ":{verb}"),
            None => Ok(()),
        }
    }
}

fn fmt_segments(f: &mut fmt::Formatter<'_>, segments: &[Segment]) -> fmt::Result {
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            f.write_str("/")?;
        }
        fmt_segment(f, segment)?;
    }
    Ok(())
}

fn fmt_segment(f: &mut fmt::Formatter<'_>, segment: &Segment) -> fmt::Result {
    match segment {
        Segment::Literal(text) => f.write_str(text),
        Segment::Wildcard => f.write_str("*"),
        Segment::DoubleWildcard => f.write_str("**"),
    }
}

// === Parser ===

/// A single forward pass over the template; every position is a byte offset.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    segments: Vec<Segment>,
    /// Byte offset of each segment in `segments`, for error messages.
    segment_pos: Vec<usize>,
    variables: Vec<Variable>,
    /// Byte offset of each variable's `{`.
    variable_pos: Vec<usize>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            pos: 0,
            segments: Vec::new(),
            segment_pos: Vec::new(),
            variables: Vec::new(),
            variable_pos: Vec::new(),
        }
    }

    fn parse(mut self) -> Result<Template, TemplateError> {
        if self.peek() != Some('/') {
            return Err(self.err(0, "a template must start with '/'"));
        }
        self.pos = 1;
        self.top_level()?;
        let verb = self.verb()?;
        self.check_double_wildcards()?;
        self.check_duplicate_fields()?;
        Ok(Template {
            segments: self.segments,
            verb,
            variables: self.variables,
        })
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn err(&self, position: usize, reason: impl Into<String>) -> TemplateError {
        TemplateError {
            template: self.src.to_owned(),
            position,
            reason: reason.into(),
        }
    }

    /// `Segments` outside any variable; stops before the verb or at the end.
    fn top_level(&mut self) -> Result<(), TemplateError> {
        loop {
            if self.peek() == Some('{') {
                self.variable()?;
            } else {
                self.segment(false)?;
            }
            match self.peek() {
                Some('/') => self.pos += 1,
                None | Some(':') => return Ok(()),
                Some(c) => return Err(self.unexpected(c)),
            }
        }
    }

    fn unexpected(&self, c: char) -> TemplateError {
        match c {
            '}' => self.err(self.pos, "unmatched '}'"),
            _ => self.err(
                self.pos,
                format!("expected '/' or ':' after a segment, found {c:?}; variables and wildcards must be whole segments"),
            ),
        }
    }

    /// One `*`, `**` or literal segment.
    fn segment(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        let start = self.pos;
        let segment = match self.peek() {
            Some('*') => self.wildcard()?,
            Some('{') => return Err(self.err(start, "variables cannot be nested")),
            Some('}') if !in_variable => return Err(self.err(start, "unmatched '}'")),
            None | Some('/' | ':' | '}') => return Err(self.empty_segment(start)),
            Some(_) => Segment::Literal(self.segment_literal()?),
        };
        self.segments.push(segment);
        self.segment_pos.push(start);
        Ok(())
    }

    fn empty_segment(&self, start: usize) -> TemplateError {
        let reason = match self.peek() {
            None if start == 1 => "a template needs at least one segment after '/'",
            None => "empty segment: the template ends with '/'",
            Some('/') => "empty segment ('//')",
            Some(':') => "empty segment before the verb",
            Some(_) => "empty segment before '}'",
        };
        self.err(start, reason)
    }

    fn wildcard(&mut self) -> Result<Segment, TemplateError> {
        let (segment, len) = if self.rest().starts_with("**") {
            (Segment::DoubleWildcard, 2)
        } else {
            (Segment::Wildcard, 1)
        };
        self.pos += len;
        match self.peek() {
            None | Some('/' | ':' | '}') => Ok(segment),
            Some(_) => Err(self.err(self.pos, "'*' and '**' must be whole segments")),
        }
    }

    /// A literal used as a segment: dot segments are refused because clients remove them
    /// before sending, so a route containing one could never be reached.
    fn segment_literal(&mut self) -> Result<String, TemplateError> {
        let start = self.pos;
        let literal = self.literal()?;
        if literal == "." || literal == ".." {
            return Err(self.err(
                start,
                "dot segments ('.', '..') are removed by clients and can never match",
            ));
        }
        Ok(literal)
    }

    /// Consumes literal text up to `/`, `:`, `}` or the end, and returns it normalised.
    fn literal(&mut self) -> Result<String, TemplateError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                '/' | ':' | '}' => break,
                '{' => return Err(self.err(self.pos, "a variable must be a whole segment")),
                '*' => return Err(self.err(self.pos, "'*' and '**' must be whole segments")),
                '%' => self.escape()?,
                c if is_path_char(c) => self.pos += 1,
                c => {
                    let reason =
                        format!("character {c:?} is not allowed in a path; percent-encode it");
                    return Err(self.err(self.pos, reason));
                }
            }
        }
        let raw = self.src.get(start..self.pos).unwrap_or_default();
        Ok(normalize_literal(raw).into_owned())
    }

    fn escape(&mut self) -> Result<(), TemplateError> {
        match self.rest().as_bytes().get(1..3).and_then(hex_pair) {
            Some(_) => {
                self.pos += 3;
                Ok(())
            }
            None => Err(self.err(self.pos, "'%' must be followed by two hex digits")),
        }
    }

    /// `{field.path}` or `{field.path=Segments}`.
    fn variable(&mut self) -> Result<(), TemplateError> {
        let open = self.pos;
        self.pos += 1;
        let field_path = self.field_path()?;
        let start = self.segments.len();
        match self.peek() {
            Some('}') => {
                self.segments.push(Segment::Wildcard);
                self.segment_pos.push(open);
            }
            Some('=') => {
                self.pos += 1;
                self.variable_segments(open)?;
            }
            None => return Err(self.err(open, "unclosed '{'")),
            Some(c) => {
                let reason = format!("expected '=' or '}}' after the field path, found {c:?}");
                return Err(self.err(self.pos, reason));
            }
        }
        self.pos += 1; // the closing '}', checked above
        let end = self.segments.len();
        self.variables.push(Variable {
            field_path,
            start,
            end,
        });
        self.variable_pos.push(open);
        Ok(())
    }

    /// The `Segments` after `=`; stops at (not past) the closing `}`.
    fn variable_segments(&mut self, open: usize) -> Result<(), TemplateError> {
        loop {
            self.segment(true)?;
            match self.peek() {
                Some('/') => self.pos += 1,
                Some('}') => return Ok(()),
                Some(':') => {
                    return Err(self.err(self.pos, "a verb cannot appear inside a variable"))
                }
                None => return Err(self.err(open, "unclosed '{'")),
                Some(c) => return Err(self.unexpected(c)),
            }
        }
    }

    fn field_path(&mut self) -> Result<Vec<String>, TemplateError> {
        let mut path = vec![self.ident()?];
        while self.peek() == Some('.') {
            self.pos += 1;
            path.push(self.ident()?);
        }
        Ok(path)
    }

    fn ident(&mut self) -> Result<String, TemplateError> {
        let rest = self.rest();
        let len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let ident = rest.get(..len).unwrap_or_default();
        if ident.is_empty() || ident.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.err(
                self.pos,
                "expected a field name matching [A-Za-z_][A-Za-z0-9_]*",
            ));
        }
        self.pos += len;
        Ok(ident.to_owned())
    }

    /// The optional `:verb`, which must run to the end of the template.
    fn verb(&mut self) -> Result<Option<String>, TemplateError> {
        if self.peek() != Some(':') {
            return Ok(None);
        }
        self.pos += 1;
        let start = self.pos;
        let verb = self.literal()?;
        match self.peek() {
            _ if verb.is_empty() => Err(self.err(start, "empty verb after ':'")),
            None => Ok(Some(verb)),
            Some(':') => Err(self.err(self.pos, "a verb cannot contain ':'")),
            Some('/') => Err(self.err(self.pos, "the verb must come after the last segment")),
            Some(c) => Err(self.unexpected(c)),
        }
    }

    fn check_double_wildcards(&self) -> Result<(), TemplateError> {
        let last = self.segments.len().saturating_sub(1);
        let misplaced = self
            .segments
            .iter()
            .enumerate()
            .find(|&(i, s)| *s == Segment::DoubleWildcard && i != last);
        match misplaced {
            Some((i, _)) => {
                let at = self.segment_pos.get(i).copied().unwrap_or_default();
                Err(self.err(
                    at,
                    "'**' must be the last segment (only the verb may follow it)",
                ))
            }
            None => Ok(()),
        }
    }

    fn check_duplicate_fields(&self) -> Result<(), TemplateError> {
        let mut seen = HashSet::new();
        for (i, v) in self.variables.iter().enumerate() {
            if !seen.insert(&v.field_path) {
                let at = self.variable_pos.get(i).copied().unwrap_or_default();
                let reason = format!("field path '{}' is bound twice", v.dotted());
                return Err(self.err(at, reason));
            }
        }
        Ok(())
    }
}

// === Percent-escapes, shared with the matcher ===

/// RFC 3986 `pchar` minus `%` (checked separately), `*` and `:` (template syntax).
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()+,;=@".contains(c)
}

/// RFC 3986 unreserved characters: escaping them never changes a URI's meaning.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Decodes the two hex digits at the start of `bytes` (after a `%`).
pub(crate) fn hex_pair(bytes: &[u8]) -> Option<u8> {
    let hi = hex_digit(*bytes.first()?)?;
    let lo = hex_digit(*bytes.get(1)?)?;
    Some((hi << 4) | lo)
}

/// Normalises percent-escapes for literal comparison: escapes of unreserved characters
/// are decoded, the others get upper-case hex digits, and malformed `%` are left alone.
///
/// Borrows (allocation-free) when `raw` has no `%`.
pub(crate) fn normalize_literal(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('%') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        rest = push_normalized_escape(&mut out, after);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Pushes the normalised form of the escape whose `%` precedes `after`; returns what follows.
fn push_normalized_escape<'s>(out: &mut String, after: &'s str) -> &'s str {
    let Some(byte) = hex_pair(after.as_bytes()) else {
        out.push('%');
        return after;
    };
    if is_unreserved(byte) {
        out.push(char::from(byte));
    } else {
        out.push('%');
        out.push_str(&after.get(..2).unwrap_or_default().to_ascii_uppercase());
    }
    after.get(2..).unwrap_or_default()
}
