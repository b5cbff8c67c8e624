use clap::Parser;

/// mimalloc: the request path makes many small, short-lived allocations across threads, where
/// it is faster than the system allocator (and far faster than musl's in the static image).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
