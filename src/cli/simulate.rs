//! `bms simulate`: a synthetic fleet as frames, daily table and truth.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bms_core::simulate::{self, FrameFormat, SimConfig};
use bms_core::{Chemistry, io};
use chrono::NaiveDate;
use clap::Args;

use super::{FileKind, ensure_parent};

#[derive(Debug, Args)]
// `--threshold -1` is a value to refuse with the flag named, not an unknown flag `-1`.
#[command(allow_negative_numbers = true)]
pub struct SimulateArgs {
    /// Number of vehicles.
    #[arg(long, default_value_t = 200, env = "BMS_SIM_VEHICLES")]
    pub vehicles: usize,

    /// Number of calendar days.
    #[arg(long, default_value_t = 120, env = "BMS_SIM_DAYS")]
    pub days: u32,

    /// Seed: the same seed gives byte-identical outputs whatever the number of threads.
    #[arg(long, default_value_t = 0, env = "BMS_SIM_SEED")]
    pub seed: u64,

    /// First simulated day (UTC), `YYYY-MM-DD`.
    #[arg(long, default_value = "2024-01-01", env = "BMS_SIM_START")]
    pub start: NaiveDate,

    /// Cells in series per pack.
    #[arg(long, default_value_t = 96, env = "BMS_SIM_CELLS")]
    pub cells: usize,

    /// Temperature probes per pack.
    #[arg(long, default_value_t = 32, env = "BMS_SIM_PROBES")]
    pub probes: usize,

    /// Sample interval during trips and charges, e.g. `10s`, `500ms`, `1m` (GB/T 32960
    /// requires at most 30 s; longer intervals are accepted with a warning).
    #[arg(long, default_value = "10s", value_parser = parse_interval, env = "BMS_SIM_INTERVAL")]
    pub interval: u32,

    /// Cell chemistry: `nmc` or `lfp`.
    #[arg(long, default_value = "nmc", env = "BMS_SIM_CHEMISTRY")]
    pub chemistry: Chemistry,

    /// Fraction of vehicles with a weak cell (0–1).
    #[arg(long, default_value_t = SimConfig::default().weak_fraction, env = "BMS_SIM_WEAK_FRACTION")]
    pub weak_fraction: f64,

    /// Frames file to write: `.csv` or `.parquet`. Holds every frame, so keep fleets small;
    /// without it the frames stream straight into the daily aggregation.
    #[arg(long)]
    pub frames: Option<PathBuf>,

    /// Daily table to write: `.csv` (reference header + extended columns) or `.parquet`.
    #[arg(long)]
    pub daily: Option<PathBuf>,

    /// Truth CSV to write: per vehicle whether and which cell (0-based) is weak, its
    /// mechanism, onset, first alarm and repair dates, and alarm days.
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

/// Parses a duration such as `10s`, `500ms`, `1m` or `1h` into milliseconds.
pub fn parse_interval(s: &str) -> std::result::Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("'{s}' is not a duration (expected e.g. 10s, 500ms, 1m)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .and_then(|ms| u32::try_from(ms).ok())
        .ok_or_else(|| format!("'{s}' is too long"))
}

pub fn run(args: SimulateArgs) -> Result<()> {
    if args.frames.is_none() && args.daily.is_none() && args.truth.is_none() {
        bail!("nothing to write: give at least one of --frames, --daily, --truth");
    }
    let config = SimConfig {
        vehicles: args.vehicles,
        days: args.days,
        seed: args.seed,
        start: args.start,
        cells: args.cells,
        probes: args.probes,
        interval_ms: args.interval,
        chemistry: args.chemistry,
        weak_fraction: args.weak_fraction,
        ..SimConfig::default()
    };
    config.validate()?;
    if !config.gbt_compliant_interval() {
        eprintln!(
            "warning: interval {} ms exceeds the 30 s GB/T 32960 allows",
            config.interval_ms
        );
    }
    let frames_kind = args
        .frames
        .as_deref()
        .map(FileKind::of_output)
        .transpose()?;
    let daily_kind = args.daily.as_deref().map(FileKind::of_output).transpose()?;
    for path in [&args.frames, &args.daily, &args.truth]
        .into_iter()
        .flatten()
    {
        ensure_parent(path)?;
    }
    let step = (config.vehicles / 20).max(1);
    let progress = move |done: usize, total: usize| {
        if done.is_multiple_of(step) || done == total {
            eprintln!("simulated {done}/{total} vehicles");
        }
    };
    let started = Instant::now();
    let out = match (&args.frames, frames_kind) {
        (Some(path), Some(kind)) => {
            let format = match kind {
                FileKind::Csv => FrameFormat::Csv,
                FileKind::Parquet => FrameFormat::Parquet,
                FileKind::Capture => unreachable!("of_output gives CSV or Parquet"),
            };
            simulate::simulate_to_frames(&config, path, format, &progress)?
        }
        _ => simulate::simulate_daily_with_progress(&config, &progress)?,
    };
    let secs = started.elapsed().as_secs_f64();
    let vehicle_days = config.vehicles as f64 * config.days as f64;
    eprintln!(
        "{} frames, {} vehicle-days in {secs:.2} s ({:.0} frames/s, {:.0} vehicle-days/s)",
        out.frames,
        vehicle_days,
        out.frames as f64 / secs,
        vehicle_days / secs
    );
    if let (Some(path), Some(kind)) = (&args.daily, daily_kind) {
        match kind {
            FileKind::Csv => io::write_daily_csv(path, &out.table, true)?,
            FileKind::Parquet => io::write_daily_parquet(path, &out.table)?,
            FileKind::Capture => unreachable!("of_output gives CSV or Parquet"),
        }
        eprintln!("{}: {} daily rows", path.display(), out.table.len());
    }
    if let Some(path) = &args.truth {
        simulate::write_truth_csv(path, &out.truth)
            .with_context(|| format!("writing truth to {}", path.display()))?;
        let weak = out.truth.iter().filter(|t| t.weak).count();
        eprintln!(
            "{}: {} vehicles, {weak} with a weak cell",
            path.display(),
            out.truth.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_interval;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("10s"), Ok(10_000));
        assert_eq!(parse_interval("500ms"), Ok(500));
        assert_eq!(parse_interval("1m"), Ok(60_000));
        assert_eq!(parse_interval("2h"), Ok(7_200_000));
        assert!(parse_interval("10").is_err());
        assert!(parse_interval("s").is_err());
        assert!(parse_interval("10x").is_err());
        assert!(parse_interval("99999999h").is_err());
    }
}
