//! `bms daily`: frames → daily table.

use std::path::PathBuf;

use anyhow::Result;
use bms_core::io::{self, ReadMode};
use bms_core::{DailyConfig, FeatureConfig, UtcOffset};
use clap::Args;

use super::{
    FileKind, ensure_parent, file_kind, is_stdio, output_kind, report_read, shown, write_out,
    write_rejects,
};

#[derive(Debug, Args)]
// `--threshold -1` is a value to refuse with the flag named, not an unknown flag `-1`.
#[command(allow_negative_numbers = true)]
pub struct DailyArgs {
    /// Frames file: CSV (`vin,timestamp,pack_voltage,pack_current,soc,cell_v_1..N,temp_1..M[,alarm_flags]`),
    /// Parquet with list columns `cell_voltages` and `temperatures`, or a GB/T 32960
    /// capture (`.bin`, or any file that starts with `##`/`$$`); `-` reads CSV from
    /// standard input.
    #[arg(long, short, env = "BMS_INPUT")]
    pub input: PathBuf,

    /// Daily table to write: `.csv` (reference header + extended columns) or `.parquet`;
    /// `-` writes CSV to standard output.
    #[arg(long, short, env = "BMS_OUT")]
    pub out: PathBuf,

    /// Offset from UTC where calendar days start, e.g. `+08:00` for data stamped in
    /// Beijing time.
    #[arg(
        long,
        default_value = "+00:00",
        env = "BMS_UTC_OFFSET",
        allow_hyphen_values = true
    )]
    pub utc_offset: String,

    /// Open-circuit-voltage curve for SOC features: `nmc`, `lfp`, or a CSV file of
    /// `soc,volts` points (header line first, both columns strictly increasing).
    #[arg(long, default_value = "nmc", env = "BMS_OCV")]
    pub ocv: String,

    /// Cell-voltage spread (volts) above which a frame without alarm flags counts as a
    /// consistency alarm.
    #[arg(long, default_value_t = bms_core::features::DEFAULT_ALARM_SPREAD_V, env = "BMS_ALARM_SPREAD_V")]
    pub alarm_spread_v: f64,

    /// Set bad input lines aside (reported, and written to `--rejects` if given) instead of
    /// stopping at the first one.
    #[arg(long, env = "BMS_LENIENT")]
    pub lenient: bool,

    /// Write rejected lines as `line,reason` CSV here (implies `--lenient`).
    #[arg(long)]
    pub rejects: Option<PathBuf>,

    /// Write only the six reference columns and Label (CSV output only).
    #[arg(long)]
    pub reference_only: bool,
}

pub use bms_batch::ocv_curve;

pub fn run(args: DailyArgs) -> Result<()> {
    let config = DailyConfig {
        features: FeatureConfig::new(ocv_curve(&args.ocv)?, args.alarm_spread_v)?,
        utc_offset: args.utc_offset.parse::<UtcOffset>()?,
    };
    let mode = if args.lenient || args.rejects.is_some() {
        ReadMode::Lenient
    } else {
        ReadMode::Strict
    };
    let input = shown(&args.input, "<stdin>");
    // Refuse an output it cannot write or may not replace before reading anything.
    super::check_outputs(std::iter::once(args.out.as_path()).chain(args.rejects.as_deref()))?;
    let out_kind = output_kind(&args.out)?;
    let mut report = match file_kind(&args.input)? {
        FileKind::Csv if is_stdio(&args.input) => {
            io::frame_csv::read_frame_csv_from(std::io::stdin().lock(), Some(&input), mode)?
        }
        FileKind::Csv => io::read_frame_csv(&args.input, mode)?,
        FileKind::Parquet => io::read_frames_parquet(&args.input, mode)?,
        FileKind::Capture => {
            let r = bms_core::gbt32960::read_capture(&args.input, mode)?;
            eprintln!("{}: {}", input.display(), r.counts);
            r.frames
        }
    };
    // Lenient: a repeated (vin, timestamp) is a reject of its line like any bad line.
    let table = bms_core::daily::aggregate_report(&mut report, &config, Some(&input), mode)?;
    report_read("frames", &input, &report);
    if let Some(path) = &args.rejects {
        ensure_parent(path)?;
        write_rejects(path, &report.rejects)?;
    }
    match out_kind {
        FileKind::Csv => write_out(
            &args.out,
            |p| io::write_daily_csv(p, &table, !args.reference_only),
            |w| io::daily_csv::write_daily_csv_to(w, &table, !args.reference_only),
        )?,
        FileKind::Parquet => {
            anyhow::ensure!(
                !args.reference_only,
                "--reference-only applies to CSV output only"
            );
            ensure_parent(&args.out)?;
            io::write_daily_parquet(&args.out, &table)?
        }
        FileKind::Capture => unreachable!("output_kind gives CSV or Parquet"),
    }
    let vehicles = {
        let mut v: Vec<&str> = table.rows.iter().map(|r| r.vin.as_str()).collect();
        v.dedup();
        v.len()
    };
    eprintln!(
        "{}: {} daily rows for {} vehicles",
        shown(&args.out, "<stdout>").display(),
        table.len(),
        vehicles
    );
    Ok(())
}
