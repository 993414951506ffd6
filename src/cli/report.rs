//! `bms report`: the HTML fleet report of a `bms predict --out DIR` directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Directory written by `bms predict --out` (predictions.parquet or predictions/,
    /// summary.json).
    pub dir: PathBuf,

    /// HTML file to write; `-` writes to standard output. Default: DIR/report.html.
    #[arg(long, short)]
    pub out: Option<PathBuf>,

    /// Labels for a "Warning before the BMS alarm" section (as `bms evaluate` takes them):
    /// lead times, detection and false alarms, and the alarm days marked in the charts.
    #[command(flatten)]
    pub labels: super::evaluate::LabelArgs,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let out = args.out.unwrap_or_else(|| args.dir.join("report.html"));
    let data = if super::is_stdio(&out) {
        let (data, html) = crate::report::report_page(&args.dir, &args.labels.files())?;
        let mut stdout = std::io::stdout().lock();
        std::io::Write::write_all(&mut stdout, html.as_bytes())
            .and_then(|()| std::io::Write::flush(&mut stdout))
            .map_err(|e| anyhow::anyhow!("writing <stdout>: {e}"))?;
        data
    } else {
        super::ensure_parent(&out)?;
        crate::report::write_report(&args.dir, &out, &args.labels.files())?
    };
    eprintln!(
        "{}: {} vehicles, {} windows, {} vehicles with an alarm",
        super::shown(&out, "<stdout>").display(),
        data.vehicles.len(),
        data.probs.len(),
        data.vehicles.iter().filter(|v| v.alarm_days > 0).count()
    );
    Ok(())
}
