//! `bms windows`: daily table → windows in the reference batch format.

use std::path::PathBuf;

use anyhow::Result;
use bms_core::io::{self, ReadMode};
use bms_core::{DailyColumn, WindowSpec};
use clap::Args;

use super::{
    FileKind, ensure_parent, file_kind, is_stdio, report_read, shown, write_out, write_rejects,
};

#[derive(Debug, Args)]
// `--threshold -1` is a value to refuse with the flag named, not an unknown flag `-1`.
#[command(allow_negative_numbers = true)]
pub struct WindowsArgs {
    /// Daily table: CSV with the reference header (extended columns optional) or Parquet;
    /// `-` reads CSV from standard input.
    #[arg(long, short, env = "BMS_INPUT")]
    pub input: PathBuf,

    /// Output CSV, one window per line: `VIN,Date,f1,…,fW` with no header (the reference
    /// batch-scoring format); with `--labels`, the label is appended as the last field.
    /// `-` writes to standard output.
    #[arg(long, short, env = "BMS_OUT")]
    pub out: PathBuf,

    /// Days of history per window.
    #[arg(long, default_value_t = 14)]
    pub context: usize,

    /// Days ahead the label looks.
    #[arg(long, default_value_t = 14)]
    pub horizon: usize,

    /// Comma-separated daily columns per day, in order. Default: the six reference
    /// columns. Extended: spread_mean, spread_max, temp_delta_max, soc_deviation_mean, frames.
    #[arg(long)]
    pub features: Option<String>,

    /// Value that replaces missing (NaN) features.
    #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
    pub fill: f64,

    /// Emit only windows whose whole horizon lies inside the data.
    #[arg(long)]
    pub full_horizon: bool,

    /// Append each window's label (1.0 if an alarm day falls in its horizon) for training.
    #[arg(long)]
    pub labels: bool,

    /// Set bad daily lines aside instead of stopping at the first one.
    #[arg(long)]
    pub lenient: bool,

    /// Write rejected lines as `line,reason` CSV here (implies `--lenient`).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
}

pub fn run(args: WindowsArgs) -> Result<()> {
    // Refuse an output it may not replace before reading anything.
    super::check_outputs(std::iter::once(args.out.as_path()).chain(args.rejects.as_deref()))?;
    let spec = WindowSpec {
        context: args.context,
        horizon: args.horizon,
        features: match &args.features {
            Some(list) => DailyColumn::parse_list(list)?,
            None => WindowSpec::default().features,
        },
        fill: args.fill,
        full_horizon: args.full_horizon,
    };
    spec.validate()?;
    let input = shown(&args.input, "<stdin>");
    let table = match file_kind(&args.input)? {
        FileKind::Csv => {
            let mode = if args.lenient || args.rejects.is_some() {
                ReadMode::Lenient
            } else {
                ReadMode::Strict
            };
            let report = if is_stdio(&args.input) {
                io::daily_csv::read_daily_csv_from(std::io::stdin().lock(), Some(&input), mode)?
            } else {
                io::read_daily_csv(&args.input, mode)?
            };
            report_read("daily rows", &input, &report);
            if let Some(path) = &args.rejects {
                ensure_parent(path)?;
                write_rejects(path, &report.rejects)?;
            }
            report.data
        }
        FileKind::Parquet => io::read_daily_parquet(&args.input)?,
        FileKind::Capture => anyhow::bail!(
            "{}: a GB/T 32960 capture holds frames, not a daily table (run `bms daily` on it first)",
            input.display()
        ),
    };
    let batch = bms_core::windows(&table, &spec)?;
    write_out(
        &args.out,
        |p| io::write_batch_csv(p, &batch, args.labels),
        |w| io::batch_csv::write_batch_csv_to(w, &batch, args.labels),
    )?;
    let alarms = batch.y.iter().filter(|&&y| y == 1.0).count();
    eprintln!(
        "{}: {} windows of {} values ({} with an alarm in the next {} days)",
        shown(&args.out, "<stdout>").display(),
        batch.len(),
        spec.width(),
        alarms,
        spec.horizon
    );
    Ok(())
}
