//! The fuzz targets on stable Rust, as part of `cargo test`: each target replays its seed
//! corpus (`tests/fuzz/corpus/<target>/`) and every crash input found so far
//! (`tests/fuzz/regressions/<target>/`), then runs inputs mutated from the corpus by proptest
//! for a bounded time: `PROTOGATE_FUZZ_SECONDS` per target (default 3), from the seed
//! `PROTOGATE_FUZZ_SEED` (default: [`CI_SEED`] under `CI=true`, so that CI runs the same inputs
//! every time, else from the clock; printed either way). A failing input is shrunk, saved
//! under `target/tmp/fuzz-failures/`, and named in the panic message, ready to become a
//! regression file. Inputs of bugs still open live in `tests/fuzz/open/<target>/`, replayed by
//! the ignored test `open_bugs`. The same targets run under libFuzzer with `cargo fuzz` (see
//! `fuzz/`).

#[path = "../fuzz/targets.rs"]
mod targets;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// One edit of an input.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    InsertToken(Index, Index),
    Delete(Index, u8),
    Duplicate(Index, u8),
    Splice(Index, Index, Index),
    Interesting(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::InsertToken(i, t)),
        (any::<Index>(), 1u8..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1u8..32).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(i, o, f)| Mutation::Splice(i, o, f)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Interesting(i, b)),
    ]
}

const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'%', b'/', b'"', b'{', b'[', b'\\'];

fn apply(input: &mut Vec<u8>, m: &Mutation, corpus: &[Vec<u8>], dictionary: &[&str]) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    match m {
        Mutation::FlipBit(i, bit) if !input.is_empty() => {
            let i = i.index(input.len());
            input[i] ^= 1 << bit;
        }
        Mutation::SetByte(i, b) if !input.is_empty() => {
            let i = i.index(input.len());
            input[i] = *b;
        }
        Mutation::Interesting(i, b) if !input.is_empty() => {
            let i = i.index(input.len());
            input[i] = INTERESTING[usize::from(*b) % INTERESTING.len()];
        }
        Mutation::Insert(i, bytes) => {
            let i = at(i, input.len());
            input.splice(i..i, bytes.iter().copied());
        }
        Mutation::InsertToken(i, t) if !dictionary.is_empty() => {
            let i = at(i, input.len());
            let token = dictionary[t.index(dictionary.len())].as_bytes();
            input.splice(i..i, token.iter().copied());
        }
        Mutation::Delete(i, n) if !input.is_empty() => {
            let i = i.index(input.len());
            let end = (i + usize::from(*n)).min(input.len());
            input.drain(i..end);
        }
        Mutation::Duplicate(i, n) if !input.is_empty() => {
            let i = i.index(input.len());
            let end = (i + usize::from(*n)).min(input.len());
            let copy = input[i..end].to_vec();
            input.splice(i..i, copy);
        }
        Mutation::Splice(i, other, from) if !corpus.is_empty() => {
            let other = &corpus[other.index(corpus.len())];
            if !other.is_empty() {
                let from = from.index(other.len());
                let i = at(i, input.len());
                input.truncate(i);
                input.extend_from_slice(&other[from..]);
            }
        }
        _ => {}
    }
}

fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(kind)
        .join(target)
}

/// The files of a corpus folder, sorted by name.
fn read_inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn fails(target: targets::Target, input: &[u8]) -> Option<String> {
    catch_unwind(AssertUnwindSafe(|| target(input)))
        .err()
        .map(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The seed under `CI=true` when `PROTOGATE_FUZZ_SEED` is not set.
const CI_SEED: u64 = 20_250_601;

fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `PROTOGATE_FUZZ_SEED`, else [`CI_SEED`] under `CI=true`, else one from the clock.
fn seed() -> u64 {
    env_number("PROTOGATE_FUZZ_SEED").unwrap_or_else(|| {
        if under_ci() {
            return CI_SEED;
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    })
}

/// Saves a failing input where `cargo test` output points, and fails the test.
fn report(name: &str, input: &[u8], message: &str, seed: u64) -> ! {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{name}-{hash:016x}"));
    std::fs::write(&path, input).unwrap();
    panic!(
        "fuzz target {name} failed (seed {seed}) on {input:?}\n  {message}\n  input saved to {}; \
         copy it to tests/fuzz/regressions/{name}/ once fixed",
        path.display()
    );
}

fn run(name: &str) {
    let target = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .expect("a known target");
    let seeds = read_inputs(&fuzz_dir("corpus", name));
    assert!(!seeds.is_empty(), "tests/fuzz/corpus/{name}/ has no seeds");
    for (path, input) in seeds
        .iter()
        .chain(read_inputs(&fuzz_dir("regressions", name)).iter())
    {
        if let Some(message) = fails(target, input) {
            panic!("{} fails: {message}", path.display());
        }
    }

    let corpus: Vec<Vec<u8>> = seeds.into_iter().map(|(_, b)| b).collect();
    let seconds = env_number("PROTOGATE_FUZZ_SECONDS").unwrap_or(3);
    let seed = seed();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..8 + name.len().min(24)].copy_from_slice(&name.as_bytes()[..name.len().min(24)]);
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    );
    let dictionary = targets::dictionary(name);
    let pool = corpus.clone();
    let strategy = (
        0..corpus.len(),
        prop::collection::vec(mutation(), 0..10),
        prop::bool::weighted(0.05),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(move |(start, mutations, random, noise)| {
            let mut input = if random { noise } else { pool[start].clone() };
            for m in &mutations {
                apply(&mut input, m, &pool, dictionary);
            }
            input
        });

    let started = Instant::now();
    let budget = Duration::from_secs(seconds);
    let mut runs = 0u64;
    while started.elapsed() < budget {
        let mut tree = strategy.new_tree(&mut runner).expect("a generated input");
        let input = tree.current();
        runs += 1;
        let Some(mut message) = fails(target, &input) else {
            continue;
        };
        let mut smallest = input;
        for _ in 0..2000 {
            if !tree.simplify() {
                break;
            }
            let candidate = tree.current();
            match fails(target, &candidate) {
                Some(m) => {
                    smallest = candidate;
                    message = m;
                }
                None => {
                    if !tree.complicate() {
                        break;
                    }
                }
            }
        }
        report(name, &smallest, &message, seed);
    }
    let summary = format!(
        "fuzz target {name}: {} corpus inputs, {runs} mutated inputs in {:?} (seed {seed})",
        corpus.len(),
        started.elapsed()
    );
    if under_ci() {
        // Straight to the log: libtest keeps a passing test's eprintln! to itself.
        let _ = writeln!(std::io::stderr(), "{summary}");
    } else {
        eprintln!("{summary}");
    }
}

#[test]
fn template() {
    run("template");
}

#[test]
fn matcher() {
    run("matcher");
}

#[test]
fn json_request() {
    run("json_request");
}

#[test]
fn json_response() {
    run("json_response");
}

#[test]
fn query() {
    run("query");
}

#[test]
fn frame() {
    run("frame");
}

#[test]
fn grpc_timeout() {
    run("grpc_timeout");
}

#[test]
fn percent_decode() {
    run("percent_decode");
}

/// Each seed of `target`'s corpus by name, with whether `fast` takes it; the count taken
/// printed.
fn fast_path_of_corpus(target: &str, fast: fn(&[u8]) -> bool) -> Vec<(String, bool)> {
    let seeds: Vec<(String, bool)> = read_inputs(&fuzz_dir("corpus", target))
        .iter()
        .map(|(path, input)| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fast(input))
        })
        .collect();
    let taken = seeds.iter().filter(|(_, taken)| *taken).count();
    eprintln!(
        "{taken} of {} {target} seeds take the fast path",
        seeds.len()
    );
    seeds
}

/// The `json_request` corpus exercises the direct JSON-to-wire encoder, which the target
/// checks against the reference path: the seeds named `fast-*` (valid bodies with every field
/// kind) must take it; most other seeds are invalid bodies, which it declines.
#[test]
fn the_json_corpus_reaches_the_fast_path() {
    let seeds = fast_path_of_corpus("json_request", targets::json_request_takes_fast_path);
    for (name, taken) in &seeds {
        assert!(
            *taken || !name.starts_with("fast-"),
            "{name} missed the fast path"
        );
    }
    assert!(seeds.iter().filter(|(_, taken)| *taken).count() >= 2);
}

/// The `query` seeds named `fast-*` are written by the direct query encoder, so the target
/// compares it with the reference path from the first run on; those that give a singular field
/// twice or a value that does not parse are left to the reference path.
#[test]
fn the_query_corpus_reaches_the_direct_encoder() {
    let seeds = fast_path_of_corpus("query", targets::query_takes_fast_path);
    for (name, taken) in &seeds {
        if name.starts_with("fast-") {
            assert!(*taken, "{name} missed the direct encoder");
        }
        if name.starts_with("twice-") || name.contains("-bad") {
            assert!(!taken, "{name} took the direct encoder");
        }
    }
    assert!(seeds.iter().filter(|(_, taken)| *taken).count() >= 4);
}

/// The seeds named `dup-*` give a key twice: the reference path refuses them as protojson
/// does, naming the key, and the direct encoder gives no frame (it stops at the key, and the
/// reference path answers).
#[test]
fn keys_given_twice_are_refused_by_both_paths() {
    let mut seeds = 0;
    for (path, input) in read_inputs(&fuzz_dir("corpus", "json_request")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("dup-") {
            continue;
        }
        let (reference, fast) =
            targets::json_request_refusals(&input).unwrap_or_else(|| panic!("{name} is accepted"));
        assert!(
            reference.contains("duplicate field \"") || reference.contains("duplicate map key \""),
            "{name}: {reference}"
        );
        assert_eq!(fast, None, "{name}: the fast path answers it itself");
        assert!(
            !targets::json_request_takes_fast_path(&input),
            "{name}: the fast path gives a frame"
        );
        seeds += 1;
    }
    assert!(seeds >= 6, "{seeds} seeds give a key twice");
}

/// Every `json_response` seed is rendered by the direct wire-to-JSON renderer, so the target
/// compares it with the reference path from the first run on.
#[test]
fn the_response_corpus_reaches_the_fast_renderer() {
    for (path, input) in read_inputs(&fuzz_dir("corpus", "json_response")) {
        assert!(
            targets::json_response_renders(&input),
            "{} is declined",
            path.display()
        );
    }
}

/// Inputs of bugs found and not fixed yet (`tests/fuzz/open/<target>/`): each fails its target
/// today; once fixed, they move to `tests/fuzz/regressions/`.
#[test]
#[ignore = "replays the inputs of open bugs, which fail until fixed"]
fn open_bugs() {
    let mut failing = Vec::new();
    for (name, target) in targets::TARGETS {
        for (path, input) in read_inputs(&fuzz_dir("open", name)) {
            if let Some(message) = fails(*target, &input) {
                failing.push(format!("{}: {message}", path.display()));
            }
        }
    }
    assert!(failing.is_empty(), "{failing:#?}");
}
