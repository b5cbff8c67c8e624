use super::*;
use crate::route::template::parse;

/// A matcher over `(method, template)` pairs whose payload is the pair's index.
fn matcher(routes: &[(Method, &str)]) -> Matcher<usize> {
    let mut m = Matcher::new();
    for (i, (method, template)) in routes.iter().enumerate() {
        let t = parse(template).unwrap();
        assert!(
            m.insert(MethodSel::Method(method.clone()), &t, i).is_ok(),
            "{template}"
        );
    }
    m
}

/// The index of the route found and its captured values; panics on any other answer.
fn found(m: &Matcher<usize>, method: Method, path: &str) -> (usize, Vec<String>) {
    match m.lookup(&method, path) {
        Lookup::Found { value, vars, .. } => (*value, vars.into_vec()),
        other => panic!("{method} {path}: expected a match, got {other:?}"),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn get(templates: &[&'static str]) -> Matcher<usize> {
    let routes: Vec<_> = templates.iter().map(|t| (Method::GET, *t)).collect();
    matcher(&routes)
}

// --- precedence and backtracking ---

#[test]
fn literal_beats_star_beats_double_star() {
    let m = get(&["/v1/{rest=**}", "/v1/{id}", "/v1/special"]);
    assert_eq!(found(&m, Method::GET, "/v1/special").0, 2);
    assert_eq!(
        found(&m, Method::GET, "/v1/other"),
        (1, strings(&["other"]))
    );
    assert_eq!(found(&m, Method::GET, "/v1/a/b"), (0, strings(&["a/b"])));
    assert_eq!(found(&m, Method::GET, "/v1"), (0, strings(&[""])));
}

#[test]
fn exact_end_beats_double_star_matching_nothing() {
    let m = get(&["/v1/books/**", "/v1/books"]);
    assert_eq!(found(&m, Method::GET, "/v1/books").0, 1);
    assert_eq!(found(&m, Method::GET, "/v1/books/x").0, 0);
}

#[test]
fn backtracks_from_literal_to_wildcard() {
    let m = get(&["/a/b/c", "/a/*/d", "/a/**"]);
    assert_eq!(found(&m, Method::GET, "/a/b/d").0, 1);
    assert_eq!(found(&m, Method::GET, "/a/b/c").0, 0);
    assert_eq!(found(&m, Method::GET, "/a/b/e").0, 2);
    assert_eq!(m.lookup(&Method::GET, "/b"), Lookup::NotFound);
}

#[test]
fn envoy_precedence_example() {
    let m = get(&["/c/*/d/**", "/c/*/d/e"]);
    assert_eq!(found(&m, Method::GET, "/c/x/d/e").0, 1);
    assert_eq!(found(&m, Method::GET, "/c/x/d/e/f").0, 0);
}

#[test]
fn multi_segment_captures() {
    let m = get(&["/a/{x=b/*}/{y=d/**}", "/v1/{name=shelves/*/books/*}"]);
    let (i, vars) = found(&m, Method::GET, "/a/b/zoo/d/animal/tiger");
    assert_eq!((i, vars), (0, strings(&["b/zoo", "d/animal/tiger"])));
    let (i, vars) = found(&m, Method::GET, "/v1/shelves/1/books/2");
    assert_eq!((i, vars), (1, strings(&["shelves/1/books/2"])));
    assert_eq!(
        m.lookup(&Method::GET, "/v1/shelves/1/books"),
        Lookup::NotFound
    );
}

// --- empty segments and odd paths ---

#[test]
fn empty_segments_match_nothing() {
    let m = get(&["/v1/books/{id}", "/v2/{rest=**}", "/v3/*/x"]);
    assert_eq!(m.lookup(&Method::GET, "/v1/books/"), Lookup::NotFound);
    assert_eq!(m.lookup(&Method::GET, "/v2/a/"), Lookup::NotFound);
    assert_eq!(m.lookup(&Method::GET, "/v2//a"), Lookup::NotFound);
    assert_eq!(m.lookup(&Method::GET, "/v3//x"), Lookup::NotFound);
    assert_eq!(m.lookup(&Method::GET, "//v1/books/1"), Lookup::NotFound);
    assert_eq!(found(&m, Method::GET, "/v2"), (1, strings(&[""])));
}

#[test]
fn root_path_is_zero_segments() {
    let m = get(&["/{rest=**}"]);
    assert_eq!(found(&m, Method::GET, "/"), (0, strings(&[""])));
    assert_eq!(found(&m, Method::GET, "/a/b"), (0, strings(&["a/b"])));
    assert_eq!(m.lookup(&Method::GET, ""), Lookup::NotFound);
    assert_eq!(m.lookup(&Method::GET, "a/b"), Lookup::NotFound);
}

// --- verbs ---

#[test]
fn verb_on_double_star() {
    let m = get(&["/v1/{name=**}:undelete", "/v1/{name=**}"]);
    let (i, vars) = found(&m, Method::GET, "/v1/a/b:undelete");
    assert_eq!((i, vars), (0, strings(&["a/b"])));
    assert_eq!(found(&m, Method::GET, "/v1:undelete"), (0, strings(&[""])));
    assert_eq!(
        found(&m, Method::GET, "/v1/a/b:other"),
        (1, strings(&["a/b:other"]))
    );
}

#[test]
fn verb_route_next_to_plain_route() {
    let m = matcher(&[
        (Method::POST, "/v1/things/{id}:cancel"),
        (Method::GET, "/v1/things/{id}"),
    ]);
    assert_eq!(
        found(&m, Method::POST, "/v1/things/7:cancel"),
        (0, strings(&["7"]))
    );
    assert_eq!(found(&m, Method::GET, "/v1/things/7"), (1, strings(&["7"])));
    // Only the text after the last ':' is the verb.
    assert_eq!(
        found(&m, Method::POST, "/v1/things/a:b:cancel"),
        (0, strings(&["a:b"]))
    );
    // A registered verb that matches only under POST is that verb's path: GET is 405 with
    // only POST allowed, never `{id}` holding "7:cancel".
    assert_eq!(
        m.lookup(&Method::GET, "/v1/things/7:cancel"),
        Lookup::MethodNotAllowed {
            allowed: vec![Method::POST]
        }
    );
    // Verb routes only match requests carrying the verb.
    let allowed = vec![Method::GET];
    assert_eq!(
        m.lookup(&Method::POST, "/v1/things/7"),
        Lookup::MethodNotAllowed { allowed }
    );
}

#[test]
fn unregistered_verb_stays_in_the_segment() {
    let m = get(&["/foo/{id}"]);
    assert_eq!(
        found(&m, Method::GET, "/foo/bar:123"),
        (0, strings(&["bar:123"]))
    );
    assert_eq!(found(&m, Method::GET, "/foo/:x"), (0, strings(&[":x"])));
}

#[test]
fn verb_only_after_the_last_slash() {
    let m = get(&["/a:go", "/{x}/{y}"]);
    assert_eq!(found(&m, Method::GET, "/a:go").0, 0);
    assert_eq!(
        found(&m, Method::GET, "/a:go/b"),
        (1, strings(&["a:go", "b"]))
    );
    assert_eq!(found(&m, Method::GET, "/a:g%6F").0, 0);
}

#[test]
fn verb_on_root_double_star() {
    let m = get(&["/**:go"]);
    assert_eq!(found(&m, Method::GET, "/:go").0, 0);
    assert_eq!(found(&m, Method::GET, "/a/b:go").0, 0);
    assert_eq!(m.lookup(&Method::GET, "/a/b"), Lookup::NotFound);
}

// --- methods ---

#[test]
fn method_not_allowed_lists_every_matching_method() {
    let m = matcher(&[
        (Method::PUT, "/v1/items/{id}"),
        (Method::DELETE, "/v1/items/{id}"),
        (Method::PATCH, "/v1/{name=items/*}"),
        (Method::POST, "/v1/items/special"),
    ]);
    let allowed = vec![Method::DELETE, Method::PATCH, Method::PUT];
    assert_eq!(
        m.lookup(&Method::GET, "/v1/items/1"),
        Lookup::MethodNotAllowed { allowed }
    );
    let allowed = vec![Method::DELETE, Method::PATCH, Method::POST, Method::PUT];
    assert_eq!(
        m.lookup(&Method::GET, "/v1/items/special"),
        Lookup::MethodNotAllowed { allowed }
    );
    assert_eq!(m.lookup(&Method::GET, "/v2/items/1"), Lookup::NotFound);
}

#[test]
fn less_specific_route_under_the_right_method_beats_405() {
    let m = matcher(&[
        (Method::POST, "/v1/books/{id}"),
        (Method::GET, "/v1/{name=**}"),
    ]);
    assert_eq!(
        found(&m, Method::GET, "/v1/books/1"),
        (1, strings(&["books/1"]))
    );
    assert_eq!(found(&m, Method::POST, "/v1/books/1"), (0, strings(&["1"])));
}

#[test]
fn any_method_matches_all_but_exact_wins() {
    let mut m = matcher(&[(Method::GET, "/v1/things/{id}")]);
    let t = parse("/v1/things/{name}").unwrap();
    assert!(m.insert(MethodSel::Any, &t, 1).is_ok());
    assert_eq!(found(&m, Method::GET, "/v1/things/a").0, 0);
    assert_eq!(found(&m, Method::DELETE, "/v1/things/a").0, 1);
    let custom = Method::from_bytes(b"PURGE").unwrap();
    assert_eq!(found(&m, custom, "/v1/things/a").0, 1);
}

#[test]
fn custom_methods_are_exact() {
    let purge = Method::from_bytes(b"PURGE").unwrap();
    let m = matcher(&[(purge.clone(), "/cache/{key}")]);
    assert_eq!(found(&m, purge.clone(), "/cache/k").0, 0);
    let allowed = vec![purge];
    assert_eq!(
        m.lookup(&Method::GET, "/cache/k"),
        Lookup::MethodNotAllowed { allowed }
    );
}

// --- decoding ---

#[test]
fn single_segment_values_are_fully_decoded() {
    let m = get(&["/v1/{id}"]);
    assert_eq!(found(&m, Method::GET, "/v1/a%2Fb").1, strings(&["a/b"]));
    assert_eq!(
        found(&m, Method::GET, "/v1/caf%C3%A9%20x+y").1,
        strings(&["café x+y"])
    );
}

#[test]
fn multi_segment_values_keep_only_slash_escaped_by_default() {
    let m = get(&["/v1/{name=**}"]);
    let vars = found(&m, Method::GET, "/v1/a%2Fb%2f/c%3ad/%41%7e%C3%A9%20").1;
    assert_eq!(vars, strings(&["a%2Fb%2f/c:d/A~é "]));
    let vars = found(
        &m,
        Method::GET,
        "/v1/%21%23%24%26%27%28%29%2A%2B%2C%3B%3D%3F%40%5B%5D",
    )
    .1;
    assert_eq!(vars, strings(&["!#$&'()*+,;=?@[]"]));
}

#[test]
fn multi_segment_unescape_modes() {
    let mut m = get(&["/v1/{name=**}"]);
    m.set_unescape(Unescape::AllExceptReserved);
    let vars = found(&m, Method::GET, "/v1/a%2Fb/c%3ad/%41%20").1;
    assert_eq!(vars, strings(&["a%2Fb/c%3ad/A "]));
    m.set_unescape(Unescape::All);
    let vars = found(&m, Method::GET, "/v1/a%2Fb/c%3ad/%41%20").1;
    assert_eq!(vars, strings(&["a/b/c:d/A "]));
}

#[test]
fn literal_segments_match_after_unreserved_decoding() {
    let m = get(&["/v1/abc/{id}", "/v1/a%2Fb"]);
    assert_eq!(found(&m, Method::GET, "/v1/%61bc/x").0, 0);
    assert_eq!(found(&m, Method::GET, "/v1/a%2fb").0, 1);
    assert_eq!(m.lookup(&Method::GET, "/v1/a/b"), Lookup::NotFound);
}

#[test]
fn malformed_escapes_are_bad_paths() {
    let m = get(&["/v1/{id}", "/v2/{name=**}", "/v3/*"]);
    for path in [
        "/v1/%G1",
        "/v1/ab%2",
        "/v1/%",
        "/v2/ok/%zz",
        "/v1/%FF",
        "/v2/%C3",
    ] {
        match m.lookup(&Method::GET, path) {
            Lookup::BadPath(message) => {
                let segment = path.rsplit('/').next().unwrap();
                assert!(message.contains(segment), "{path}: {message}");
            }
            other => panic!("{path}: expected BadPath, got {other:?}"),
        }
    }
    // Segments no variable captures are never decoded.
    assert_eq!(found(&m, Method::GET, "/v3/%G1").0, 2);
}

// --- building ---

#[test]
fn same_shape_same_method_conflicts() {
    let mut m = matcher(&[(Method::GET, "/v1/{name=shelves/*}")]);
    let t = parse("/v1/shelves/{id}").unwrap();
    let conflict = m.insert(MethodSel::Method(Method::GET), &t, 9).unwrap_err();
    assert_eq!(*conflict.existing, 0);
    assert_eq!(*conflict.method, MethodSel::Method(Method::GET));
    assert_eq!(conflict.template.to_string(), "/v1/{name=shelves/*}");
    assert_eq!(m.len(), 1);
    assert_eq!(found(&m, Method::GET, "/v1/shelves/1").0, 0);
}

#[test]
fn same_shape_other_method_or_verb_is_fine() {
    let mut m = matcher(&[(Method::GET, "/v1/{id}"), (Method::POST, "/v1/{id}")]);
    assert!(m
        .insert(MethodSel::Any, &parse("/v1/{x}").unwrap(), 2)
        .is_ok());
    assert!(m
        .insert(MethodSel::Any, &parse("/v1/{x}").unwrap(), 3)
        .is_err());
    assert!(m
        .insert(
            MethodSel::Method(Method::GET),
            &parse("/v1/{id}:x").unwrap(),
            4
        )
        .is_ok());
    assert_eq!(m.len(), 4);
}

#[test]
fn iter_lists_routes_in_insertion_order() {
    let m = matcher(&[(Method::GET, "/b"), (Method::POST, "/a/{x=*}")]);
    let listed: Vec<_> = m
        .iter()
        .map(|(method, t, v)| format!("{method} {t} {v}"))
        .collect();
    assert_eq!(listed, ["GET /b 0", "POST /a/{x} 1"]);
    assert!(!m.is_empty());
    assert!(Matcher::<()>::new().is_empty());
    assert_eq!(MethodSel::Any.to_string(), "*");
}

// --- properties, against a naive reference matcher ---

mod reference {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    type Route = (MethodSel, Template);

    #[derive(Debug, PartialEq, Eq)]
    enum Answer {
        Found(usize),
        NotAllowed(Vec<Method>),
        NotFound,
    }

    /// Orders templates by specificity: segment kinds left to right, literal, `*`, end of
    /// template, `**`.
    fn rank(t: &Template) -> Vec<u8> {
        let kinds = t.segments.iter().map(|s| match s {
            Segment::Literal(_) => 0,
            Segment::Wildcard => 1,
            Segment::DoubleWildcard => 3,
        });
        kinds.chain([2]).collect()
    }

    fn matches(t: &[Segment], segs: &[String]) -> bool {
        match (t.first(), segs.first()) {
            (None, _) => segs.is_empty(),
            (Some(Segment::DoubleWildcard), _) => {
                t.len() == 1 && segs.iter().all(|s| !s.is_empty())
            }
            (Some(_), None) => false,
            (Some(Segment::Wildcard), Some(s)) => !s.is_empty() && matches(&t[1..], &segs[1..]),
            (Some(Segment::Literal(l)), Some(s)) => l == s && matches(&t[1..], &segs[1..]),
        }
    }

    fn segments(rest: &str) -> Vec<String> {
        if rest.is_empty() {
            return Vec::new();
        }
        rest.split('/').map(|s| s.replace("%61", "a")).collect()
    }

    /// The readings of the path: with a registered verb split off, then without.
    fn readings<'p>(routes: &[Route], rest: &'p str) -> Vec<(&'p str, Option<&'p str>)> {
        let last = rest.rsplit('/').next().unwrap_or("");
        let mut out = Vec::new();
        if let Some((_, verb)) = last.rsplit_once(':') {
            if routes.iter().any(|(_, t)| t.verb.as_deref() == Some(verb)) {
                out.push((&rest[..rest.len() - verb.len() - 1], Some(verb)));
            }
        }
        out.push((rest, None));
        out
    }

    fn reference(routes: &[Route], method: &Method, path: &str) -> Answer {
        let Some(rest) = path.strip_prefix('/') else {
            return Answer::NotFound;
        };
        let mut allowed = Vec::new();
        for (head, verb) in readings(routes, rest) {
            let segs = segments(head);
            let candidates: Vec<_> = (0..routes.len())
                .filter(|&i| {
                    routes[i].1.verb.as_deref() == verb && matches(&routes[i].1.segments, &segs)
                })
                .collect();
            let fits = |sel: &MethodSel| {
                *sel == MethodSel::Any || *sel == MethodSel::Method(method.clone())
            };
            let best = candidates
                .iter()
                .filter(|&&i| fits(&routes[i].0))
                .min_by_key(|&&i| (rank(&routes[i].1), routes[i].0 == MethodSel::Any));
            if let Some(&i) = best {
                return Answer::Found(i);
            }
            for &i in &candidates {
                if let MethodSel::Method(m) = &routes[i].0 {
                    allowed.push(m.clone());
                }
            }
            // A verb reading that some method serves decides: the plain reading is not tried.
            if verb.is_some() && !allowed.is_empty() {
                break;
            }
        }
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allowed.dedup();
        if allowed.is_empty() {
            Answer::NotFound
        } else {
            Answer::NotAllowed(allowed)
        }
    }

    fn answer(m: &Matcher<usize>, method: &Method, path: &str) -> Answer {
        match m.lookup(method, path) {
            Lookup::Found { value, .. } => Answer::Found(*value),
            Lookup::MethodNotAllowed { allowed } => Answer::NotAllowed(allowed),
            Lookup::NotFound => Answer::NotFound,
            Lookup::BadPath(message) => panic!("{path}: unexpected BadPath {message}"),
        }
    }

    /// Inserts every route, checking that exactly the duplicates conflict; returns the
    /// matcher and the routes it kept, indexed by payload.
    fn build(routes: Vec<Route>) -> (Matcher<usize>, Vec<Route>) {
        let mut m = Matcher::new();
        let mut kept: Vec<Route> = Vec::new();
        for (sel, t) in routes {
            assert_eq!(parse(&t.to_string()).as_ref(), Ok(&t), "Display round trip");
            let duplicate = kept
                .iter()
                .any(|(s, k)| *s == sel && k.shape() == t.shape());
            let inserted = m.insert(sel.clone(), &t, kept.len()).is_ok();
            assert_eq!(inserted, !duplicate, "{sel} {t}");
            if inserted {
                kept.push((sel, t));
            }
        }
        (m, kept)
    }

    /// Renders generated segments as a template string, wrapping some runs in variables.
    fn render(segs: &[&str], wrap: &[(bool, bool)], verb: Option<&str>) -> String {
        let mut out = String::new();
        let mut i = 0;
        while let Some(seg) = segs.get(i) {
            let (var, two) = wrap.get(i).copied().unwrap_or_default();
            let len = if two && i + 1 < segs.len() { 2 } else { 1 };
            if var {
                out.push_str(&format!("/{{v{i}={}}}", segs[i..i + len].join("/")));
                i += len;
            } else {
                out.push_str(&format!("/{seg}"));
                i += 1;
            }
        }
        if let Some(verb) = verb {
            out.push_str(&format!(":{verb}"));
        }
        out
    }

    fn route() -> impl Strategy<Value = Route> {
        let segs = prop::collection::vec(select(vec!["a", "b", "c", "*"]), 0..4);
        let wrap = prop::collection::vec(any::<(bool, bool)>(), 5);
        let verb = prop::option::weighted(0.3, select(vec!["x", "y"]));
        let sel = select(vec![
            MethodSel::Method(Method::GET),
            MethodSel::Method(Method::POST),
            MethodSel::Any,
        ]);
        (segs, any::<bool>(), wrap, verb, sel)
            .prop_filter("a template has a segment", |(s, ds, ..)| {
                !s.is_empty() || *ds
            })
            .prop_map(|(mut segs, double_star, wrap, verb, sel)| {
                if double_star {
                    segs.push("**");
                }
                let text = render(&segs, &wrap, verb);
                (sel, parse(&text).unwrap_or_else(|e| panic!("{e}")))
            })
    }

    fn path() -> impl Strategy<Value = String> {
        let segs = prop::collection::vec(select(vec!["a", "b", "c", "d", "%61", "", "a:x"]), 0..5);
        let verb = select(vec!["", "", ":x", ":y", ":z"]);
        (segs, verb).prop_map(|(segs, verb)| format!("/{}{verb}", segs.join("/")))
    }

    fn method() -> impl Strategy<Value = Method> {
        select(vec![Method::GET, Method::POST, Method::PUT])
    }

    /// Fills a template's wildcards from `fills`; returns the path and each segment's text.
    fn expand(t: &Template, fills: &[&str], counts: &[usize]) -> (String, Vec<String>) {
        let mut fills = fills.iter().cycle();
        let mut parts = Vec::new();
        for (i, seg) in t.segments.iter().enumerate() {
            let part = match seg {
                Segment::Literal(l) => l.clone(),
                Segment::Wildcard => fills.next().unwrap().to_string(),
                Segment::DoubleWildcard => {
                    let n = counts.get(i).copied().unwrap_or(1);
                    fills
                        .by_ref()
                        .take(n)
                        .copied()
                        .collect::<Vec<_>>()
                        .join("/")
                }
            };
            parts.push(part);
        }
        let nonempty: Vec<_> = parts.iter().filter(|p| !p.is_empty()).cloned().collect();
        let verb = t.verb.as_ref().map(|v| format!(":{v}")).unwrap_or_default();
        (format!("/{}{verb}", nonempty.join("/")), parts)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn lookup_agrees_with_reference(
            routes in prop::collection::vec(route(), 1..10),
            requests in prop::collection::vec((method(), path()), 1..20),
        ) {
            let (m, kept) = build(routes);
            for (method, path) in &requests {
                prop_assert_eq!(answer(&m, method, path), reference(&kept, method, path), "{} {}", method, path);
            }
        }

        #[test]
        fn expanded_templates_are_found(
            routes in prop::collection::vec(route(), 1..8),
            fills in prop::collection::vec(select(vec!["a", "b", "c", "d"]), 1..8),
            counts in prop::collection::vec(0usize..3, 5),
        ) {
            let (m, kept) = build(routes);
            for (i, (sel, t)) in kept.iter().enumerate() {
                let method = match sel { MethodSel::Method(m) => m.clone(), MethodSel::Any => Method::DELETE };
                let (path, parts) = expand(t, &fills, &counts);
                let expected = reference(&kept, &method, &path);
                prop_assert!(matches!(expected, Answer::Found(_)), "{} {} from {}", method, path, t);
                let Lookup::Found { value, vars, .. } = m.lookup(&method, &path) else {
                    return Err(TestCaseError::fail(format!("{method} {path} not found")));
                };
                prop_assert_eq!(Answer::Found(*value), expected);
                if *value == i {
                    let want: Vec<String> = t.variables.iter().map(|v| {
                        parts[v.start..v.end].iter().filter(|p| !p.is_empty()).cloned().collect::<Vec<_>>().join("/")
                    }).collect();
                    prop_assert_eq!(vars.into_vec(), want);
                }
            }
        }

        /// Arbitrary paths never panic the matcher.
        #[test]
        fn lookup_never_panics(path in "\\PC*", routes in prop::collection::vec(route(), 1..6)) {
            let (m, _) = build(routes);
            let _ = m.lookup(&Method::GET, &path);
            let _ = m.lookup(&Method::GET, &format!("/{path}"));
        }
    }
}
