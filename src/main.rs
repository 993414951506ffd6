use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = bms::cli::Cli::parse();
    match bms::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
