//! `bms report`: the HTML fleet report of a `bms predict --out DIR` directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Directory written by `bms predict --out` (predictions.parquet or predictions/,
    /// summary.json).
    pub dir: PathBuf,

    /// HTML file to write. Default: DIR/report.html.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let out = args.out.unwrap_or_else(|| args.dir.join("report.html"));
    super::ensure_parent(&out)?;
    let data = crate::report::write_report(&args.dir, &out)?;
    eprintln!(
        "{}: {} vehicles, {} windows, {} vehicles with an alarm",
        out.display(),
        data.vehicles.len(),
        data.probs.len(),
        data.vehicles.iter().filter(|v| v.alarm_days > 0).count()
    );
    Ok(())
}
