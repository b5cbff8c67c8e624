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
    for block in option_blocks(&help) {
        let Some(flag) = block.split_whitespace().find(|w| w.starts_with("--")) else {
            continue;
        };
        let flag = flag.trim_end_matches(',');
        if flag == "--help" {
            continue;
        }
        if !doc.contains(&format!("`{flag}")) {
            missing.push(flag.to_string());
        }
        match block
            .split("[env: ")
            .nth(1)
            .and_then(|e| e.split('=').next())
        {
            Some(env) if doc.contains(env) => {}
            Some(env) => missing.push(env.to_string()),
            None => missing.push(format!("{flag} has no environment variable")),
        }
    }
    assert!(missing.len() < 100 && !help.is_empty());
    assert!(missing.is_empty(), "docs/operations.md lacks: {missing:?}");
}

/// Each option of a `--help` text with the lines of its description.
fn option_blocks(help: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines().map(str::trim_start) {
        if line.starts_with('-') {
            blocks.push(line.to_string());
        } else if let Some(last) = blocks.last_mut() {
            last.push(' ');
            last.push_str(line);
        }
    }
    blocks
}
