//! The documentation lists every flag the binary has.

use std::process::Command;

#[test]
fn operations_guide_lists_every_serve_flag_and_its_environment_variable() {
    let help = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let mut missing = Vec::new();
    for line in help.lines().map(str::trim_start) {
        let flag = line
            .split_whitespace()
            .find(|w| w.starts_with("--"))
            .map(|w| w.trim_end_matches(','));
        let Some(flag) = flag.filter(|f| *f != "--help") else {
            continue;
        };
        if !doc.contains(&format!("`{flag}")) {
            missing.push(flag.to_string());
        }
        if let Some(env) = line
            .split("[env: ")
            .nth(1)
            .and_then(|e| e.split('=').next())
        {
            if !doc.contains(env) {
                missing.push(env.to_string());
            }
        }
    }
    assert!(missing.is_empty(), "docs/operations.md lacks: {missing:?}");
}
