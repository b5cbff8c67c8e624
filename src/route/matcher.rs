//! A segment trie that matches raw request paths against `google.api.http` templates.
//!
//! Pure and synchronous: it knows templates and HTTP methods, not descriptors. The payload
//! `T` is whatever the caller needs to serve a match (a route id or a compiled plan).
//!
//! # Matching rules
//!
//! - The path is split on `/` *before* any decoding, so `%2F` never separates segments.
//!   `"/"` is zero segments; every other empty segment (`//`, a trailing `/`) matches
//!   nothing, not even `**`, so `/v1/books/` matches neither `/v1/books/{id}` nor
//!   `/v1/books/**`.
//! - Literals are compared after normalising the request segment the way template
//!   literals are normalised (escapes of unreserved characters decoded, other escapes'
//!   hex upper-cased), so `/v1/%61bc` matches `/v1/abc`. Segments without `%` are
//!   compared as they are, without allocating.
//! - Precedence is literal, then `*`, then `**`, segment by segment, with backtracking; a
//!   template ending exactly where the path ends beats a `**` matching zero segments. The
//!   first match in that order wins.
//! - If the last segment has a `:` and the text after the last `:` is the verb of some
//!   route, the path is tried first with that verb split off, then as a plain path
//!   (so `GET /foo/bar:123` can match `/foo/{id}` with `id = "bar:123"`).
//! - At the winning template an exact method beats [`MethodSel::Any`]. If no template
//!   matches under the request's method but some match under others, the answer is
//!   [`Lookup::MethodNotAllowed`].
//! - Captures: `{x}`/`{x=*}` values are fully percent-decoded; multi-segment values are
//!   decoded by the [`Unescape`] mode: by default everything but `%2F` (the letter of
//!   `google/api/http.proto`).

use std::borrow::Cow;
use std::fmt;

use http::Method;
use smallvec::SmallVec;

use super::template::{hex_pair, normalize_literal, Segment, Template};
use crate::error::quoted;

#[cfg(test)]
mod tests;

/// Which HTTP methods a route answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MethodSel {
    /// Exactly this method.
    Method(Method),
    /// Every method (`custom { kind: "*" }`); an exact method on the same template wins.
    Any,
}

/// Routes keyed by method and path template.
#[derive(Debug, Clone)]
pub struct Matcher<T> {
    /// The trie; index 0 is the root (the empty path).
    nodes: Vec<Node>,
    /// Inserted routes, in insertion order.
    entries: Vec<Entry<T>>,
    /// Every verb some route uses, sorted: only these are split off request paths.
    verbs: Vec<Box<str>>,
    /// How multi-segment captures are percent-decoded.
    unescape: Unescape,
}

/// How the value of a multi-segment variable (`{x=a/*}`, `{x=**}`) is percent-decoded.
/// Single-segment variables are always fully decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unescape {
    /// Everything but `%2F`/`%2f`, as `google/api/http.proto` specifies.
    #[default]
    AllExceptSlash,
    /// Everything but RFC 6570 reserved characters (Envoy's default).
    AllExceptReserved,
    /// Everything, `%2F` included.
    All,
}

/// An insertion refused because a route with the same method and shape exists.
#[derive(Debug)]
pub struct Conflict<'a, T> {
    /// The method shared by both routes.
    pub method: &'a MethodSel,
    /// The existing route's template (its variable names may differ from the new one's).
    pub template: &'a Template,
    /// The existing route's payload, so the caller can name it.
    pub existing: &'a T,
}

/// The answer to [`Matcher::lookup`].
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    /// A route matched.
    Found {
        /// Its payload.
        value: &'a T,
        /// Its template.
        template: &'a Template,
        /// One decoded value per entry of [`Template::variables`], in the same order.
        vars: SmallVec<[String; 4]>,
    },
    /// The path matches only under other methods: answer 405 with these in `Allow`
    /// (sorted, deduplicated).
    MethodNotAllowed {
        /// Every method under which the path matches.
        allowed: Vec<Method>,
    },
    /// No route matches the path.
    NotFound,
    /// A route matched but a captured value has a malformed escape or is not UTF-8 once
    /// decoded: answer 400 with this message.
    BadPath(String),
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Literal children, sorted by text for binary search.
    literals: Vec<(Box<str>, usize)>,
    star: Option<usize>,
    /// The `**` child; it has no children of its own since `**` is always last.
    double_star: Option<usize>,
    /// Routes whose template ends at this node.
    leaves: Vec<Leaf>,
}

#[derive(Debug, Clone)]
struct Leaf {
    verb: Option<Box<str>>,
    method: MethodSel,
    entry: usize,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    method: MethodSel,
    template: Template,
    value: T,
}

/// One way of reading the request path: its segments and the verb split off, if any.
struct Attempt<'p> {
    /// Raw segments, for captures.
    raw: SmallVec<[&'p str; 16]>,
    /// Normalised segments, for literal comparison.
    norm: SmallVec<[Cow<'p, str>; 16]>,
    verb: Option<Cow<'p, str>>,
}

const ROOT: usize = 0;

// === impl MethodSel ===

impl fmt::Display for MethodSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodSel::Method(m) => f.write_str(m.as_str()),
            MethodSel::Any => f.write_str("*"),
        }
    }
}

// === impl Matcher ===

impl<T> Default for Matcher<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Matcher<T> {
    /// An empty matcher.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
            entries: Vec::new(),
            verbs: Vec::new(),
            unescape: Unescape::default(),
        }
    }

    /// Sets how multi-segment captures are decoded.
    pub fn set_unescape(&mut self, mode: Unescape) {
        self.unescape = mode;
    }

    /// Adds a route.
    ///
    /// Templates should come from [`super::template::parse`]; a hand-built invalid one
    /// never panics but may be unreachable.
    ///
    /// # Errors
    ///
    /// A [`Conflict`] naming the existing route when one with the same [`MethodSel`] and
    /// the same [`Template::shape`] exists; the matcher is then unchanged.
    pub fn insert(
        &mut self,
        method: MethodSel,
        template: &Template,
        value: T,
    ) -> Result<(), Conflict<'_, T>> {
        let node = self.node_for(&template.segments);
        let verb = template.verb.as_deref().map(normalize_literal);
        if let Some(existing) = self.leaf_entry(node, &method, verb.as_deref()) {
            // Leaves only point at pushed entries, so `get` always finds it.
            return self
                .entries
                .get(existing)
                .map_or(Ok(()), |e| Err(e.conflict()));
        }
        let verb = verb.map(Into::into);
        self.push_route(node, method, template.clone(), verb, value);
        Ok(())
    }

    /// Matches a request. `path` is the raw, still percent-encoded path without the query.
    pub fn lookup<'a>(&'a self, method: &Method, path: &str) -> Lookup<'a, T> {
        let Some(rest) = path.strip_prefix('/') else {
            return Lookup::NotFound;
        };
        let attempts = self.attempts(rest);
        for attempt in &attempts {
            if let Some(entry) = self.find(attempt, method) {
                return self.found(entry, &attempt.raw);
            }
            // A path ending in a custom verb that some method serves is that verb's path:
            // under another method it is 405, never a variable that happens to hold `:verb`.
            if attempt.verb.is_some() {
                let verb_methods = self.not_allowed(std::slice::from_ref(attempt));
                if matches!(verb_methods, Lookup::MethodNotAllowed { .. }) {
                    return verb_methods;
                }
            }
        }
        self.not_allowed(&attempts)
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no route has been inserted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every route in insertion order, for listing them (`protogate routes`).
    pub fn iter(&self) -> impl Iterator<Item = (&MethodSel, &Template, &T)> {
        self.entries
            .iter()
            .map(|e| (&e.method, &e.template, &e.value))
    }

    // --- building ---

    /// The node reached by `segments`, creating missing nodes on the way.
    fn node_for(&mut self, segments: &[Segment]) -> usize {
        segments
            .iter()
            .fold(ROOT, |id, segment| self.child_or_new(id, segment))
    }

    fn child_or_new(&mut self, id: usize, segment: &Segment) -> usize {
        if let Some(child) = self.nodes.get(id).and_then(|n| n.child(segment)) {
            return child;
        }
        let child = self.nodes.len();
        self.nodes.push(Node::default());
        if let Some(node) = self.nodes.get_mut(id) {
            node.set_child(segment, child);
        }
        child
    }

    fn push_route(
        &mut self,
        node: usize,
        method: MethodSel,
        template: Template,
        verb: Option<Box<str>>,
        value: T,
    ) {
        self.add_verb(verb.as_deref());
        let entry = self.entries.len();
        let leaf = Leaf {
            verb,
            method: method.clone(),
            entry,
        };
        if let Some(n) = self.nodes.get_mut(node) {
            n.leaves.push(leaf);
        }
        let entry = Entry {
            method,
            template,
            value,
        };
        self.entries.push(entry);
    }

    fn leaf_entry(&self, node: usize, method: &MethodSel, verb: Option<&str>) -> Option<usize> {
        let leaves = self
            .nodes
            .get(node)
            .map(|n| n.leaves.as_slice())
            .unwrap_or_default();
        leaves
            .iter()
            .find(|l| l.method == *method && l.verb.as_deref() == verb)
            .map(|l| l.entry)
    }

    fn add_verb(&mut self, verb: Option<&str>) {
        if let Some(verb) = verb {
            if let Err(at) = self.verbs.binary_search_by(|v| (**v).cmp(verb)) {
                self.verbs.insert(at, verb.into());
            }
        }
    }

    // --- matching ---

    /// The readings of the path to try, in order: with a registered verb split off, then
    /// as plain segments.
    fn attempts<'p>(&self, rest: &'p str) -> SmallVec<[Attempt<'p>; 2]> {
        let mut attempts = SmallVec::new();
        if let Some((head, verb)) = split_verb(rest) {
            let verb = normalize_literal(verb);
            if self.verbs.binary_search_by(|v| (**v).cmp(&verb)).is_ok() {
                attempts.push(Attempt::new(head, Some(verb)));
            }
        }
        attempts.push(Attempt::new(rest, None));
        attempts
    }

    /// The first entry, in precedence order, matching the attempt under `method`.
    fn find(&self, attempt: &Attempt<'_>, method: &Method) -> Option<usize> {
        let verb = attempt.verb.as_deref();
        let mut hit = None;
        self.walk(&attempt.norm, |node| {
            hit = node.pick(verb, method);
            hit.is_some()
        });
        hit
    }

    fn found<'a>(&'a self, entry: usize, raw: &[&str]) -> Lookup<'a, T> {
        let Some(e) = self.entries.get(entry) else {
            return Lookup::NotFound;
        };
        match capture(&e.template, raw, self.unescape) {
            Ok(vars) => Lookup::Found {
                value: &e.value,
                template: &e.template,
                vars,
            },
            Err(message) => Lookup::BadPath(message),
        }
    }

    /// Nothing matched under the request's method: collect the methods that would.
    fn not_allowed<'a>(&'a self, attempts: &[Attempt<'_>]) -> Lookup<'a, T> {
        let mut allowed = Vec::new();
        for attempt in attempts {
            let verb = attempt.verb.as_deref();
            self.walk(&attempt.norm, |node| {
                allowed.extend(node.methods(verb).cloned());
                false
            });
        }
        if allowed.is_empty() {
            return Lookup::NotFound;
        }
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allowed.dedup();
        Lookup::MethodNotAllowed { allowed }
    }

    /// Visits, in precedence order, every node at which a template matching `segs` ends,
    /// until `visit` returns true.
    ///
    /// Depth-first with an explicit stack (no recursion, so no stack overflow on long
    /// paths). Each trie node sits at one fixed depth and is reached by one path, so a
    /// lookup visits every node at most once.
    fn walk(&self, segs: &[Cow<'_, str>], mut visit: impl FnMut(&Node) -> bool) {
        // `**` may swallow the segments from `depth` on only if none of them is empty.
        let rest_ok_from = segs.iter().rposition(|s| s.is_empty()).map_or(0, |i| i + 1);
        let mut stack: SmallVec<[(usize, usize); 32]> = SmallVec::new();
        stack.push((ROOT, 0));
        while let Some((id, depth)) = stack.pop() {
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            let Some(seg) = segs.get(depth) else {
                if visit(node) {
                    return;
                }
                stack.extend(node.double_star.map(|ds| (ds, depth)));
                continue;
            };
            // Pushed in reverse precedence: the literal child is popped first.
            if depth >= rest_ok_from {
                stack.extend(node.double_star.map(|ds| (ds, segs.len())));
            }
            if !seg.is_empty() {
                stack.extend(node.star.map(|s| (s, depth + 1)));
            }
            stack.extend(node.literal(seg).map(|l| (l, depth + 1)));
        }
    }
}

// === impl Entry ===

impl<T> Entry<T> {
    fn conflict(&self) -> Conflict<'_, T> {
        Conflict {
            method: &self.method,
            template: &self.template,
            existing: &self.value,
        }
    }
}

// === impl Node ===

impl Node {
    fn literal(&self, text: &str) -> Option<usize> {
        let at = self
            .literals
            .binary_search_by(|(k, _)| (**k).cmp(text))
            .ok()?;
        self.literals.get(at).map(|(_, id)| *id)
    }

    fn child(&self, segment: &Segment) -> Option<usize> {
        match segment {
            Segment::Literal(text) => self.literal(&normalize_literal(text)),
            Segment::Wildcard => self.star,
            Segment::DoubleWildcard => self.double_star,
        }
    }

    fn set_child(&mut self, segment: &Segment, child: usize) {
        match segment {
            Segment::Literal(text) => {
                let text = normalize_literal(text);
                if let Err(at) = self.literals.binary_search_by(|(k, _)| (**k).cmp(&text)) {
                    self.literals.insert(at, (text.into(), child));
                }
            }
            Segment::Wildcard => self.star = Some(child),
            Segment::DoubleWildcard => self.double_star = Some(child),
        }
    }

    /// The entry for `method` and `verb` here: an exact method first, else `Any`.
    fn pick(&self, verb: Option<&str>, method: &Method) -> Option<usize> {
        let mut any = None;
        for leaf in self.leaves.iter().filter(|l| l.verb.as_deref() == verb) {
            match &leaf.method {
                MethodSel::Method(m) if m == method => return Some(leaf.entry),
                MethodSel::Method(_) => {}
                MethodSel::Any => any = Some(leaf.entry),
            }
        }
        any
    }

    fn methods<'s>(&'s self, verb: Option<&'s str>) -> impl Iterator<Item = &'s Method> + 's {
        self.leaves
            .iter()
            .filter(move |l| l.verb.as_deref() == verb)
            .filter_map(|l| match &l.method {
                MethodSel::Method(m) => Some(m),
                MethodSel::Any => None,
            })
    }
}

// === impl Attempt ===

impl<'p> Attempt<'p> {
    fn new(rest: &'p str, verb: Option<Cow<'p, str>>) -> Self {
        let raw: SmallVec<[&str; 16]> = if rest.is_empty() {
            SmallVec::new()
        } else {
            rest.split('/').collect()
        };
        let norm = raw.iter().map(|s| normalize_literal(s)).collect();
        Self { raw, norm, verb }
    }
}

/// Splits `a/b:verb` into `("a/b", "verb")` at the last `:` after the last `/`.
fn split_verb(rest: &str) -> Option<(&str, &str)> {
    let last_segment = rest.rfind('/').map_or(0, |i| i + 1);
    let colon = last_segment + rest.get(last_segment..)?.rfind(':')?;
    Some((rest.get(..colon)?, rest.get(colon + 1..)?))
}

// === Captures ===

fn capture(t: &Template, raw: &[&str], mode: Unescape) -> Result<SmallVec<[String; 4]>, String> {
    t.variables
        .iter()
        .map(|v| {
            // Segments before a trailing `**` pair one-to-one with the template's.
            let end = if v.captures_rest(t) { raw.len() } else { v.end };
            let segs = raw.get(v.start..end).unwrap_or_default();
            if v.is_single_segment(t) {
                decode(segs.first().copied().unwrap_or_default(), Unescape::All)
                    .map(Cow::into_owned)
            } else {
                decode_joined(segs, mode)
            }
        })
        .collect()
}

fn decode_joined(segs: &[&str], mode: Unescape) -> Result<String, String> {
    let mut out = String::new();
    for (i, seg) in segs.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&decode(seg, mode)?);
    }
    Ok(out)
}

/// Whether `mode` keeps the escape of `b` as written.
fn keeps_escaped(mode: Unescape, b: u8) -> bool {
    match mode {
        Unescape::AllExceptSlash => b == b'/',
        Unescape::AllExceptReserved => b":/?#[]@!$&'()*+,;=".contains(&b),
        Unescape::All => false,
    }
}

/// Percent-decodes one segment; escapes that `mode` keeps stay as written.
fn decode(seg: &str, mode: Unescape) -> Result<Cow<'_, str>, String> {
    if !seg.contains('%') {
        return Ok(Cow::Borrowed(seg));
    }
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let escape = bytes.get(i..i + 3).unwrap_or_default();
        let Some(byte) = escape.get(1..).and_then(hex_pair) else {
            return Err(format!(
                "malformed percent-escape in path segment {}",
                quoted(seg)
            ));
        };
        if keeps_escaped(mode, byte) {
            out.extend_from_slice(escape);
        } else {
            out.push(byte);
        }
        i += 3;
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| {
        format!(
            "path segment {} is not valid UTF-8 once percent-decoded",
            quoted(seg)
        )
    })
}
