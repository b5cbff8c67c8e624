#![deny(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = protogate::config::Cli::parse();
    match protogate::app::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("protogate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
