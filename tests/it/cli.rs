//! The real `protogate` binary: `routes`, `compile`, start-up failures and their messages,
//! environment variables and help. Every command here exits by itself.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;

const VPS_ROW: [&str; 4] = [
    "POST",
    "/skvps/locdata",
    "/vpresult.LocationService/getLocationPose",
    "*",
];
const REGENERATE: &str =
    "cargo run -- compile -I . schema/VPResult/vpresult_grpc_gw.proto -o descriptors/vps.binpb";

/// What a finished run printed.
#[derive(Debug)]
struct Run {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success; returns stdout.
    fn ok(&self) -> &str {
        assert!(self.success, "protogate failed: {self:#?}");
        &self.stdout
    }

    /// Asserts failure with a non-zero exit code; returns stderr.
    fn failed(&self) -> &str {
        assert!(!self.success, "protogate succeeded: {self:#?}");
        assert!(matches!(self.code, Some(c) if c != 0), "{self:#?}");
        &self.stderr
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary in the crate root with `env` set and every other `PROTOGATE_*` variable
/// removed, so the caller's environment cannot change the result.
fn protogate_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_protogate"));
    command.args(args).current_dir(manifest_dir());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PROTOGATE_") {
            command.env_remove(key);
        }
    }
    command.env("PROTOGATE_LOG", "error");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("protogate runs");
    Run {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn protogate(args: &[&str]) -> Run {
    protogate_env(args, &[])
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// A `routes` listing split into its header and its rows' columns; checks the columns line up.
fn parse_listing(stdout: &str) -> Vec<Vec<String>> {
    let mut lines = stdout.lines();
    let header = lines.next().expect("a header line");
    let columns = ["METHOD", "TEMPLATE", "GRPC METHOD", "BODY"].map(|c| header.find(c));
    assert_eq!(columns[0], Some(0), "header: {header:?}");
    assert!(columns.iter().all(Option::is_some), "header: {header:?}");
    let columns: Vec<usize> = columns.into_iter().flatten().collect();
    assert!(
        columns.windows(2).all(|w| w[0] < w[1]),
        "header: {header:?}"
    );
    lines
        .map(|line| {
            let mut cells = Vec::new();
            let mut starts = Vec::new();
            let mut offset = 0;
            for cell in line.split(' ') {
                if !cell.is_empty() {
                    starts.push(offset);
                    cells.push(cell.to_string());
                }
                offset += cell.len() + 1;
            }
            assert_eq!(starts, columns, "misaligned row {line:?} under {header:?}");
            cells
        })
        .collect()
}

fn row(cells: [&str; 4]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

// --- routes --------------------------------------------------------------------------

#[test]
fn routes_lists_one_line_per_binding() {
    let run = protogate(&[
        "routes",
        "--proto",
        "testapi/v1/library.proto",
        "-I",
        "tests/protos",
    ]);
    let stdout = run.ok();
    let rows = parse_listing(stdout);
    // 19 annotated methods (Unbound has no rule), GetBook with one additional binding.
    assert_eq!(rows.len(), 20, "{stdout}");
    for expected in [
        [
            "GET",
            "/v1/{name=shelves/*/books/*}",
            "/testapi.v1.Library/GetBook",
            "-",
        ],
        [
            "GET",
            "/v2/books/{name}",
            "/testapi.v1.Library/GetBook",
            "-",
        ],
        [
            "SEARCH",
            "/v1/books:search",
            "/testapi.v1.Library/SearchBooks",
            "*",
        ],
        ["*", "/v1/any/{name}", "/testapi.v1.Library/AnyMethod", "-"],
        [
            "PATCH",
            "/v1/{book.name=shelves/*/books/*}",
            "/testapi.v1.Library/UpdateBook",
            "book",
        ],
        [
            "POST",
            "/v1/shelves/{shelf}/books",
            "/testapi.v1.Library/CreateBook",
            "book",
        ],
        ["GET", "/v1/watch/{name}", "/testapi.v1.Library/Watch", "-"],
    ] {
        assert!(
            rows.contains(&row(expected)),
            "{expected:?} missing from\n{stdout}"
        );
    }
    assert!(!stdout.contains("Unbound"), "{stdout}");
    let mut sorted = rows.clone();
    sorted.sort();
    assert_eq!(rows, sorted, "rows are not sorted");
    assert!(run.stderr.is_empty(), "{}", run.stderr);

    let run = protogate(&[
        "routes",
        "--proto",
        "testapi/v1/library.proto",
        "-I",
        "tests/protos",
        "--expose-unannotated",
    ]);
    let exposed = parse_listing(run.ok());
    assert_eq!(exposed.len(), 21, "{}", run.stdout);
    let unbound = row([
        "POST",
        "/testapi.v1.Library/Unbound",
        "/testapi.v1.Library/Unbound",
        "*",
    ]);
    assert!(exposed.contains(&unbound), "{}", run.stdout);
    // Annotated methods keep their own rules only.
    assert!(
        !run.stdout.contains("POST    /testapi.v1.Library/GetBook"),
        "{}",
        run.stdout
    );
    assert_eq!(
        exposed
            .iter()
            .filter(|r| r[2].ends_with("/GetBook"))
            .count(),
        2
    );
}

#[test]
fn routes_reads_a_descriptor_set() {
    let run = protogate(&["routes", "--descriptor-set", "descriptors/vps.binpb"]);
    let rows = parse_listing(run.ok());
    assert_eq!(rows, vec![row(VPS_ROW)], "{}", run.stdout);
}

// --- compile -------------------------------------------------------------------------

#[test]
fn committed_vps_descriptor_set_is_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vps.binpb");
    protogate(&[
        "compile",
        "-I",
        ".",
        "schema/VPResult/vpresult_grpc_gw.proto",
        "-o",
        path_str(&out),
    ])
    .ok();
    let fresh = std::fs::read(&out).unwrap();
    let committed = std::fs::read(manifest_dir().join("descriptors/vps.binpb")).unwrap();
    assert!(
        fresh == committed,
        "descriptors/vps.binpb is out of date with schema/ ({} bytes compiled, {} committed); \
         regenerate it with `{REGENERATE}`",
        fresh.len(),
        committed.len()
    );
    // Written atomically: nothing but the output is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["vps.binpb"]);
}

// --- bad descriptors stop start-up ---------------------------------------------------

/// Writes `bad.proto` (package `bad.v1`, message `Req`, service `S` with `rpcs`) into `dir`.
fn write_proto(dir: &Path, name: &str, rpcs: &str) {
    let source = format!(
        "syntax = \"proto3\";\n\
         package bad.v1;\n\
         import \"google/api/annotations.proto\";\n\
         message Req {{ string name = 1; string other = 2; }}\n\
         service S {{\n{rpcs}\n}}\n"
    );
    std::fs::write(dir.join(name), source).unwrap();
}

/// `routes` for one proto file in `dir`; asserts it fails and prints nothing on stdout.
fn routes_error(dir: &Path, file: &str) -> String {
    let run = protogate(&["routes", "--proto", file, "-I", path_str(dir)]);
    let stderr = run.failed().to_string();
    assert!(run.stdout.is_empty(), "partial listing: {}", run.stdout);
    stderr
}

fn assert_mentions(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
}

#[test]
fn a_path_variable_naming_no_field_stops_routes_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let rule = r#"get: "/v1/{missing}""#;
    write_proto(
        dir.path(),
        "missing.proto",
        &format!("rpc Get(Req) returns (Req) {{ option (google.api.http) = {{ {rule} }}; }}"),
    );
    let stderr = routes_error(dir.path(), "missing.proto");
    assert_mentions(
        &stderr,
        &["missing.proto", "bad.v1.S.Get", rule, "\"missing\""],
    );

    // serve fails the same way, before it binds: the address it is given is taken, and the
    // error is still the rule's, not the listener's.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = protogate(&[
        "serve",
        "--proto",
        "missing.proto",
        "-I",
        path_str(dir.path()),
        "--upstream",
        "http://127.0.0.1:1",
        "--listen",
        &addr,
    ]);
    let serve_err = run.failed();
    assert_mentions(
        serve_err,
        &["missing.proto", "bad.v1.S.Get", rule, "\"missing\""],
    );
    assert!(!serve_err.contains("cannot listen"), "{serve_err}");

    // The same command with a good file does reach the listener, which is taken.
    write_proto(
        dir.path(),
        "good.proto",
        r#"rpc Get(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name}" }; }"#,
    );
    let run = protogate(&[
        "serve",
        "--proto",
        "good.proto",
        "-I",
        path_str(dir.path()),
        "--upstream",
        "http://127.0.0.1:1",
        "--listen",
        &addr,
    ]);
    assert_mentions(run.failed(), &["cannot listen", &addr]);
    drop(taken);
}

#[test]
fn a_body_naming_no_field_stops_routes() {
    let dir = tempfile::tempdir().unwrap();
    write_proto(
        dir.path(),
        "body.proto",
        r#"rpc Create(Req) returns (Req) { option (google.api.http) = { post: "/v1/things" body: "nope" }; }"#,
    );
    let stderr = routes_error(dir.path(), "body.proto");
    assert_mentions(
        &stderr,
        &[
            "body.proto",
            "bad.v1.S.Create",
            r#"post: "/v1/things""#,
            "\"nope\"",
        ],
    );
}

#[test]
fn an_unparsable_template_stops_routes() {
    let dir = tempfile::tempdir().unwrap();
    for (file, template) in [
        ("slash.proto", "v1/no-leading-slash"),
        ("star.proto", "/v1/{name=**}/x"),
    ] {
        write_proto(
            dir.path(),
            file,
            &format!(
                r#"rpc Get(Req) returns (Req) {{ option (google.api.http) = {{ get: "{template}" }}; }}"#
            ),
        );
        let stderr = routes_error(dir.path(), file);
        assert_mentions(
            &stderr,
            &[
                file,
                "bad.v1.S.Get",
                &format!("{template:?}"),
                "invalid path template",
            ],
        );
    }
}

#[test]
fn two_bindings_matching_the_same_requests_stop_routes() {
    let dir = tempfile::tempdir().unwrap();
    write_proto(
        dir.path(),
        "dup.proto",
        r#"rpc GetA(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name}" }; }
           rpc GetB(Req) returns (Req) { option (google.api.http) = { get: "/v1/{other}" }; }"#,
    );
    let stderr = routes_error(dir.path(), "dup.proto");
    assert_mentions(
        &stderr,
        &[
            "dup.proto",
            "bad.v1.S.GetA",
            "bad.v1.S.GetB",
            r#""/v1/{name}""#,
            r#""/v1/{other}""#,
        ],
    );

    // The same template under different methods is not a conflict.
    write_proto(
        dir.path(),
        "methods.proto",
        r#"rpc GetA(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name}" }; }
           rpc DelB(Req) returns (Req) { option (google.api.http) = { delete: "/v1/{other}" }; }"#,
    );
    let run = protogate(&[
        "routes",
        "--proto",
        "methods.proto",
        "-I",
        path_str(dir.path()),
    ]);
    assert_eq!(parse_listing(run.ok()).len(), 2);
}

/// Compiles `file` in `dir` with the binary into `<dir>/full.binpb`; returns the bytes.
fn compile_set(dir: &Path, file: &str) -> Vec<u8> {
    let out = dir.join("full.binpb");
    protogate(&["compile", "-I", path_str(dir), file, "-o", path_str(&out)]).ok();
    std::fs::read(out).unwrap()
}

#[test]
fn a_set_without_its_imports_names_the_file_and_include_imports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("common.proto"),
        "syntax = \"proto3\"; package common.v1; message Page { int32 size = 1; }",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("user.proto"),
        r#"syntax = "proto3";
           package user.v1;
           import "google/api/annotations.proto";
           import "common.proto";
           message Req { string name = 1; common.v1.Page page = 2; }
           service Users {
             rpc Get(Req) returns (Req) { option (google.api.http) = { get: "/v1/users/{name}" }; }
           }"#,
    )
    .unwrap();
    let full = compile_set(dir.path(), "user.proto");
    let mut set = prost_types::FileDescriptorSet::decode(full.as_slice()).unwrap();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    assert!(
        names.contains(&"common.proto") && names.contains(&"google/api/annotations.proto"),
        "{names:?}"
    );
    set.file.retain(|f| f.name() == "user.proto");
    let stripped = dir.path().join("stripped.binpb");
    std::fs::write(&stripped, set.encode_to_vec()).unwrap();

    let run = protogate(&["routes", "--descriptor-set", path_str(&stripped)]);
    assert_mentions(run.failed(), &["stripped.binpb", "--include_imports"]);

    // The complete set loads.
    let run = protogate(&[
        "routes",
        "--descriptor-set",
        path_str(&dir.path().join("full.binpb")),
    ]);
    let rows = parse_listing(run.ok());
    assert_eq!(
        rows,
        vec![row(["GET", "/v1/users/{name}", "/user.v1.Users/Get", "-"])]
    );
}

/// Keeps the `file` entries of an encoded set whose name is `keep`, copying their bytes as
/// they are (decoding with prost-types would drop extension options like google.api.http).
fn keep_file_raw(set: &[u8], keep: &str) -> Vec<u8> {
    let mut rest = set;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let start = rest;
        let key = prost::encoding::decode_varint(&mut rest).unwrap();
        assert_eq!(
            key,
            (1 << 3) | 2,
            "a FileDescriptorSet holds only `file` entries"
        );
        let len = usize::try_from(prost::encoding::decode_varint(&mut rest).unwrap()).unwrap();
        let (entry, after) = rest.split_at(len);
        let file = prost_types::FileDescriptorProto::decode(entry).unwrap();
        if file.name() == keep {
            out.extend_from_slice(&start[..start.len() - after.len()]);
        }
        rest = after;
    }
    out
}

#[test]
fn a_set_missing_only_google_api_loads_with_the_built_in_files() {
    let dir = tempfile::tempdir().unwrap();
    write_proto(
        dir.path(),
        "api.proto",
        r#"rpc Get(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name}" }; }"#,
    );
    let full = compile_set(dir.path(), "api.proto");
    let stripped = keep_file_raw(&full, "api.proto");
    assert!(!stripped.is_empty() && stripped.len() < full.len());
    let path = dir.path().join("api-only.binpb");
    std::fs::write(&path, stripped).unwrap();
    let run = protogate(&["routes", "--descriptor-set", path_str(&path)]);
    let rows = parse_listing(run.ok());
    assert_eq!(rows, vec![row(["GET", "/v1/{name}", "/bad.v1.S/Get", "-"])]);
}

#[test]
fn a_file_that_is_not_a_descriptor_set_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.binpb");
    std::fs::write(&garbage, b"\xff\xff\xff not a set").unwrap();
    let run = protogate(&["routes", "--descriptor-set", path_str(&garbage)]);
    assert_mentions(run.failed(), &["garbage.binpb", "not a FileDescriptorSet"]);

    let missing = dir.path().join("absent.binpb");
    let run = protogate(&["routes", "--descriptor-set", path_str(&missing)]);
    assert_mentions(run.failed(), &["absent.binpb", "cannot read"]);
}

#[test]
fn serve_refuses_an_unknown_service_upstream() {
    let run = protogate(&[
        "serve",
        "--descriptor-set",
        "descriptors/vps.binpb",
        "--upstream",
        "http://127.0.0.1:1",
        "--service-upstream",
        "no.Such=http://127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_mentions(run.failed(), &["no.Such", "--service-upstream"]);
}

#[test]
fn serve_without_an_upstream_says_to_give_one() {
    let run = protogate(&[
        "serve",
        "--descriptor-set",
        "descriptors/vps.binpb",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_mentions(run.failed(), &["--upstream", "vpresult.LocationService"]);
}

#[test]
fn check_and_serve_without_descriptors_say_what_to_pass() {
    for command in ["check", "serve"] {
        let run = protogate(&[
            command,
            "--upstream",
            "http://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ]);
        assert_mentions(
            run.failed(),
            &[
                "no descriptors",
                "--descriptor-set",
                "--proto",
                "--descriptors-from-reflection",
            ],
        );
    }
}

#[test]
fn check_refuses_trace_settings_it_cannot_honour() {
    let library = ["--proto", "testapi/v1/library.proto", "-I", "tests/protos"];
    let check = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["check", "--upstream", "http://127.0.0.1:1"];
        args.extend_from_slice(&library);
        args.extend_from_slice(extra);
        protogate_env(&args, env)
    };
    let https = check(&["--otlp-endpoint", "https://collector:4317"], &[]);
    assert_mentions(
        https.failed(),
        &["--otlp-endpoint", "https://collector:4317", "http://"],
    );
    let from_env = check(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]);
    assert_mentions(from_env.failed(), &["collector:4317", "not an http:// URL"]);
    let endpoint = ["--otlp-endpoint", "http://127.0.0.1:1"];
    for (name, value, said) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/json",
            "grpc or http/protobuf",
        ),
        (
            "OTEL_TRACES_SAMPLER",
            "sometimes",
            "parentbased_traceidratio",
        ),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots", "whole number"),
    ] {
        let run = check(&endpoint, &[(name, value)]);
        assert_mentions(run.failed(), &[name, value, said]);
    }
    let run = check(
        &endpoint,
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ],
    );
    assert!(run.ok().starts_with("ok: "), "{}", run.ok());
}

// --- environment variables and help --------------------------------------------------

#[test]
fn flags_read_environment_variables() {
    let run = protogate_env(
        &["routes"],
        &[("PROTOGATE_DESCRIPTOR_SET", "descriptors/vps.binpb")],
    );
    assert_eq!(parse_listing(run.ok()), vec![row(VPS_ROW)]);

    // List variables take comma-separated values.
    let run = protogate_env(
        &["routes"],
        &[
            ("PROTOGATE_DESCRIPTOR_SET", "descriptors/vps.binpb"),
            ("PROTOGATE_PROTO", "testapi/v1/library.proto"),
            ("PROTOGATE_INCLUDE", "tests/protos,schema"),
            ("PROTOGATE_EXPOSE_UNANNOTATED", "true"),
        ],
    );
    let rows = parse_listing(run.ok());
    assert!(rows.contains(&row(VPS_ROW)), "{}", run.stdout);
    assert!(
        run.stdout.contains("/testapi.v1.Library/Unbound"),
        "{}",
        run.stdout
    );
    // VPS's getLocationInfo has no rule either, and is exposed too.
    assert!(
        run.stdout
            .contains("/vpresult.LocationService/getLocationInfo"),
        "{}",
        run.stdout
    );

    let run = protogate_env(
        &[
            "routes",
            "--proto",
            "testapi/v1/library.proto",
            "-I",
            "tests/protos",
        ],
        &[("PROTOGATE_EXPOSE_UNANNOTATED", "false")],
    );
    assert!(!run.ok().contains("Unbound"), "{}", run.stdout);

    let run = protogate_env(
        &[
            "serve",
            "--descriptor-set",
            "descriptors/vps.binpb",
            "--upstream",
            "http://127.0.0.1:1",
        ],
        &[("PROTOGATE_LISTEN", "bad")],
    );
    assert_mentions(run.failed(), &["'bad'", "--listen"]);

    let run = protogate_env(
        &[
            "serve",
            "--descriptor-set",
            "descriptors/vps.binpb",
            "--listen",
            "127.0.0.1:0",
        ],
        &[("PROTOGATE_UPSTREAM", "ftp://nowhere:1")],
    );
    assert_mentions(run.failed(), &["ftp://nowhere:1"]);
}

/// The option lines of a help text: `--long-name` and the rest of the line.
/// Each option of a `--help` text with its whole description (clap puts long descriptions on
/// the lines after the flag).
fn help_options(help: &str) -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = Vec::new();
    for line in help.lines().map(str::trim_start) {
        let name = line
            .starts_with('-')
            .then(|| line.find("--"))
            .flatten()
            .map(|at| {
                line[at + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect::<String>()
            });
        match (name, options.last_mut()) {
            (Some(name), _) => options.push((name, line.to_string())),
            (None, Some((_, text))) => {
                text.push(' ');
                text.push_str(line);
            }
            (None, None) => {}
        }
    }
    options
}

#[test]
fn every_serving_flag_has_its_environment_variable() {
    for command in ["serve", "routes", "demo"] {
        let run = protogate(&[command, "--help"]);
        let options = help_options(run.ok());
        assert!(options.len() >= 4, "{command}: {}", run.stdout);
        for (name, line) in options {
            if name == "help" || name == "version" {
                continue;
            }
            let var = format!(
                "[env: PROTOGATE_{}=",
                name.to_ascii_uppercase().replace('-', "_")
            );
            assert!(
                line.contains(&var),
                "{command} --{name} has no {var}]: {line}"
            );
        }
    }
}

#[test]
fn help_describes_the_commands_and_serve_flags() {
    let run = protogate(&["--help"]);
    assert_mentions(
        run.ok(),
        &[
            "serve",
            "routes",
            "compile",
            "demo",
            "--log",
            "PROTOGATE_LOG",
        ],
    );

    let run = protogate(&["serve", "--help"]);
    assert_mentions(
        run.ok(),
        &[
            "--descriptor-set",
            "--proto",
            "--upstream",
            "--service-upstream",
            "--listen",
            "PROTOGATE_UPSTREAM",
            "PROTOGATE_SERVICE_UPSTREAM",
        ],
    );

    let run = protogate(&["--version"]);
    assert_mentions(run.ok(), &[env!("CARGO_PKG_VERSION")]);

    let run = protogate(&["serve", "--no-such-flag"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert_mentions(&run.stderr, &["--no-such-flag"]);
}

#[test]
fn a_proto_syntax_error_names_the_file_and_position_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("syntax.proto"),
        "syntax = \"proto3\";\nmessage A { int32 x = 1 }\n",
    )
    .unwrap();
    let stderr = routes_error(dir.path(), "syntax.proto");
    assert_mentions(&stderr, &["syntax.proto:2:"]);

    let out = dir.path().join("out.binpb");
    let run = protogate(&[
        "compile",
        "-I",
        path_str(dir.path()),
        "syntax.proto",
        "-o",
        path_str(&out),
    ]);
    assert_mentions(run.failed(), &["syntax.proto:2:"]);
    assert!(!out.exists(), "a failed compile wrote {}", out.display());

    let run = protogate(&[
        "compile",
        "-I",
        path_str(dir.path()),
        "absent.proto",
        "-o",
        path_str(&out),
    ]);
    assert_mentions(run.failed(), &["absent.proto"]);
}
