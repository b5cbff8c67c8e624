#![deny(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use clap::Parser;

// jemalloc's per-thread caches suit a runtime per core, where a request's buffers are allocated
// and freed on one thread; glibc's malloc spent a tenth of a small request's CPU in its bins.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
