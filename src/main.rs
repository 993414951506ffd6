use clap::Parser;

/// The arguments, with `serve` put first when the binary is invoked under the name
/// `serve` (a container whose entry point is a `serve` link to `bms`).
fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as_serve = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "serve");
    if invoked_as_serve {
        args.insert(1, "serve".into());
    }
    args
}

fn main() -> std::process::ExitCode {
    let cli = bms::cli::Cli::parse_from(args());
    match bms::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
