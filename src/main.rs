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
    keep_freed_memory();
    let cli = bms::cli::Cli::parse_from(args());
    match bms::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", bms_batch::error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc returns large freed blocks to the kernel at once, so a batch run that allocates
/// and frees tens of megabytes per chunk pays page faults (and, on virtual machines, the
/// host's page allocation) for the same memory again and again. Keeping freed memory in
/// the process removed most of that system time in `bms predict --out`.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
