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
