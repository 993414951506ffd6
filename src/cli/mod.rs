//! Subcommands of the `bms` binary.

pub mod daily;
pub mod demo;
pub mod evaluate;
pub mod gateway;
pub mod ingest;
pub mod predict;
pub mod report;
pub mod serve;
pub mod simulate;
pub mod windows;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Predict battery "cell consistency poor" alarms from BMS telemetry.
///
/// Pipeline: frames → frame features → daily table → windows (+labels) → model →
/// predictions. Each stage is a subcommand.
#[derive(Debug, Parser)]
#[command(name = "bms", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole job on a simulated fleet: simulate, score with the shipped model, write
    /// every store and the HTML report, and say what was found.
    Demo(demo::DemoArgs),
    /// Aggregate a frames file (CSV or Parquet) into the daily table.
    Daily(daily::DailyArgs),
    /// Decode a GB/T 32960 capture (concatenated 2016/2025 packets) into frames, with
    /// counts of packets by command and every refused packet with its byte offset.
    Ingest(ingest::IngestArgs),
    /// Cut a daily table into model windows in the reference batch format.
    Windows(windows::WindowsArgs),
    /// Score batch lines, a daily table or frames with an ONNX model: CSV on stdout, or
    /// Parquet, JSONL, SQLite, rejects and summary with `--out DIR`.
    Predict(predict::PredictArgs),
    /// Measure predictions against labels: ROC AUC, average precision and precision /
    /// recall / F1 per window; per vehicle, days of warning before the first alarm,
    /// detection rates and false alarms on vehicles that never alarm.
    Evaluate(evaluate::EvaluateArgs),
    /// Write a self-contained HTML report of a `bms predict --out DIR` directory.
    Report(report::ReportArgs),
    /// Simulate a fleet: frames, daily table and truth (weak cells, first alarms).
    Simulate(simulate::SimulateArgs),
    /// The platform side of GB/T 32960: a TCP gateway that answers vehicles, stores every
    /// acknowledged frame and records a prediction whenever a vehicle's day closes.
    ///
    /// Vehicles log in and send 2016 (`##`) or 2025 (`$$`) packets; each gets the
    /// standard's response packets. A login is refused (`02`, or `04` in 2025) when
    /// --registry does not list the VIN.
    ///
    /// A realtime or reissue report is answered `01` (success) only after its packet is
    /// fsynced to the journal under DIR/journal/; on SIGTERM/SIGINT (and at the next start
    /// after a crash) the journal becomes DIR/frames/date=YYYY-MM-DD/*.parquet. Predictions go
    /// to DIR/results.sqlite and DIR/events.jsonl, the stores `bms predict --out` writes, with
    /// the same event ids. Realtime frames newer than the vehicle's latest feed its monitor;
    /// reissued and older frames are stored as history only. Refused and unreadable packets
    /// are logged with their byte offset and never answered.
    Gateway(gateway::GatewayArgs),
    /// Serve a model over HTTP: the SageMaker container contract (/ping, /invocations,
    /// /execution-parameters), the online API (/v1/predict) and /metrics.
    Serve(serve::ServeArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Daily(args) => daily::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::Windows(args) => windows::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Report(args) => report::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Gateway(args) => gateway::run(args),
    }
}

pub use bms_batch::FileKind;

/// Whether `path` is `-`: standard input or output.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The format of a file argument: `-` is CSV, otherwise by extension.
pub fn file_kind(path: &Path) -> Result<FileKind> {
    if is_stdio(path) {
        Ok(FileKind::Csv)
    } else {
        FileKind::of(path)
    }
}

/// The format of an output file argument: `-` is CSV, otherwise CSV or Parquet by extension.
pub fn output_kind(path: &Path) -> Result<FileKind> {
    if is_stdio(path) {
        Ok(FileKind::Csv)
    } else {
        FileKind::of_output(path)
    }
}

/// The name of a file argument in messages: `<stdin>` / `<stdout>` for `-`.
pub fn shown(path: &Path, stdio: &'static str) -> PathBuf {
    if is_stdio(path) {
        PathBuf::from(stdio)
    } else {
        path.to_path_buf()
    }
}

/// Writes `f`'s output to `path`, or to standard output for `-` (CSV only).
pub fn write_out(
    path: &Path,
    to_file: impl FnOnce(&Path) -> bms_core::Result<()>,
    to_stdout: impl FnOnce(&mut std::io::BufWriter<std::io::StdoutLock<'static>>) -> std::io::Result<()>,
) -> Result<()> {
    if is_stdio(path) {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        to_stdout(&mut w)
            .and_then(|()| std::io::Write::flush(&mut w))
            .map_err(|e| anyhow::anyhow!("writing <stdout>: {e}"))
    } else {
        ensure_parent(path)?;
        Ok(to_file(path)?)
    }
}

/// Refuses output file paths whose targets exist and are not regular files (a device, a
/// FIFO, a symlink, a directory: SPEC §4) before anything is read or written; `-` (standard
/// output) passes.
pub fn check_outputs<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    for path in paths.into_iter().filter(|p| !is_stdio(p)) {
        bms_core::io::check_output_file(path)?;
    }
    Ok(())
}

/// Creates the directory an output file goes into, when missing.
pub fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create directory {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Prints a reader's counts and rejects to stderr.
pub fn report_read<T>(what: &'static str, path: &Path, report: &bms_core::io::ReadReport<T>) {
    report_counts(path, &bms_batch::ReadCounts::of(what, report));
}

/// Prints counts and the first rejects to stderr.
pub fn report_counts(path: &Path, report: &bms_batch::ReadCounts<'_>) {
    eprintln!(
        "{}: read {} {}, accepted {}, rejected {}",
        path.display(),
        report.read,
        report.what,
        report.accepted,
        report.rejects.len()
    );
    for r in report.rejects.iter().take(20) {
        eprintln!("  line {}: {}", r.line, r.reason);
    }
    if report.rejects.len() > 20 {
        eprintln!("  … and {} more", report.rejects.len() - 20);
    }
}

/// Writes rejects as `line,reason` CSV.
pub fn write_rejects(path: &Path, rejects: &[bms_core::io::Reject]) -> Result<()> {
    let mut out = String::from("line,reason\n");
    for r in rejects {
        out.push_str(&format!(
            "{},\"{}\"\n",
            r.line,
            r.reason.replace('"', "\"\"")
        ));
    }
    let mut f = bms_core::io::AtomicFile::create(path)?;
    std::io::Write::write_all(f.file(), out.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    f.commit()?;
    bms_batch::sink::readable(path);
    Ok(())
}
