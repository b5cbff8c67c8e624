//! The shape of `src/`, checked from its `use` lines: no two files import each other, directly
//! or through others, and the pure modules (no I/O, no serving) import nothing from the
//! modules that do I/O, nor (`LAYERS`) from a module above them; the pure files of impure
//! modules (`PURE_FILES`) import pure modules only. A file's imports are its
//! `use crate::...` and `use super::...` paths (outside `#[cfg(test)]` modules), resolved to
//! the longest module path that is a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that must stay pure.
const PURE: [&str; 9] = [
    "metrics",
    "route",
    "transcode",
    "grpc",
    "error",
    "descriptor",
    "openapi",
    "well_known",
    "validate",
];
/// Pure files of modules that do I/O: they import pure modules only.
const PURE_FILES: [&str; 2] = ["trace::spans", "trace::config"];
/// What they must not import.
const IMPURE: [&str; 5] = ["server", "upstream", "app", "reload", "trace"];
/// Imports between pure modules that the layering forbids: a route plan says what a request
/// means and the transcoders read it, never the reverse (the compiled schemas belong to the
/// snapshot, not to a route).
const LAYERS: [(&str, &str); 1] = [("route", "transcode")];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/server/edge.rs` -> `server::edge`; `src/lib.rs` -> ``.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [only] if only == "lib" || only == "main" => String::new(),
        _ => parts.join("::"),
    }
}

/// The paths a file imports, as written after `crate::` or `super::` (the prefix kept).
fn imported_paths(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut paths = Vec::new();
    for line in code.lines().map(str::trim) {
        if line.starts_with("//") {
            continue;
        }
        for prefix in ["crate::", "super::"] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let path: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                paths.push(path.trim_end_matches(':').to_string());
                rest = &rest[at + prefix.len()..];
            }
        }
    }
    paths
}

/// The module file an import path names: the longest prefix that is a module.
fn resolve(from: &str, path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut parts: Vec<&str> = if let Some(rest) = path.strip_prefix("crate::") {
        rest.split("::").collect()
    } else {
        let mut base: Vec<&str> = from.split("::").collect();
        let mut rest = path;
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        base.extend(rest.split("::"));
        base
    };
    parts.retain(|p| !p.is_empty());
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

fn import_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let edges = graph.entry(from.clone()).or_default();
        for path in imported_paths(&text) {
            // A file may use what its own ancestors declare: they declared it.
            let Some(to) = resolve(&from, &path, &modules) else {
                continue;
            };
            if to != from && !from.starts_with(&format!("{to}::")) && !to.is_empty() {
                edges.insert(to);
            }
        }
    }
    graph
}

/// The groups of modules that import each other (strongly connected components of more than
/// one module), by Tarjan's algorithm.
fn loops(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.found.push(group);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or_default()
}

#[test]
fn no_file_of_src_imports_itself_through_others() {
    let graph = import_graph();
    assert!(
        graph.len() > 40,
        "too few modules found: {:?}",
        graph.keys()
    );
    let found = loops(&graph);
    assert!(
        found.is_empty(),
        "modules that import each other: {found:#?}"
    );
}

#[test]
fn pure_modules_import_nothing_that_does_io() {
    let graph = import_graph();
    let mut bad = Vec::new();
    for (from, to) in &graph {
        if !PURE.contains(&top(from)) {
            continue;
        }
        for target in to {
            if IMPURE.contains(&top(target)) {
                bad.push(format!("{from} imports {target}"));
            }
        }
    }
    assert!(bad.is_empty(), "pure modules importing I/O: {bad:#?}");
}

#[test]
fn pure_files_import_pure_modules_only() {
    let graph = import_graph();
    let mut bad = Vec::new();
    for from in PURE_FILES {
        let to = graph
            .get(from)
            .unwrap_or_else(|| panic!("{from} not found"));
        for target in to {
            if !PURE.contains(&top(target)) && !PURE_FILES.contains(&target.as_str()) {
                bad.push(format!("{from} imports {target}"));
            }
        }
    }
    assert!(bad.is_empty(), "pure files importing I/O: {bad:#?}");
}

#[test]
fn pure_modules_keep_their_layers() {
    let graph = import_graph();
    let bad: Vec<String> = graph
        .iter()
        .flat_map(|(from, to)| to.iter().map(move |target| (from, target)))
        .filter(|(from, target)| LAYERS.contains(&(top(from), top(target))))
        .map(|(from, target)| format!("{from} imports {target}"))
        .collect();
    assert!(bad.is_empty(), "imports against the layering: {bad:#?}");
}

#[test]
fn the_checks_see_a_loop_and_an_impure_import() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(loops(&graph), vec![vec!["a", "b", "c"]]);
    let modules: BTreeSet<String> = ["server", "server::edge", "route", "route::plan"]
        .map(String::from)
        .into();
    assert_eq!(
        resolve("route::plan", "crate::server::edge::Thing", &modules).as_deref(),
        Some("server::edge")
    );
    assert_eq!(
        resolve("server::edge", "super::super::route::plan::X", &modules).as_deref(),
        Some("route::plan")
    );
    assert_eq!(
        imported_paths("use crate::a::{b, c};\n// use crate::x;\nfn f() { super::y::z(); }"),
        ["crate::a", "super::y::z"]
    );
}
