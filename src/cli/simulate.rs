//! `bms simulate`: a synthetic fleet as frames, daily table, truth and GB/T 32960 capture.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bms_core::gbt32960::{Edition, command, encode};
use bms_core::simulate::{self, FrameFormat, SimConfig};
use bms_core::{Chemistry, io};
use chrono::NaiveDate;
use clap::Args;
use rayon::prelude::*;

use super::{FileKind, ensure_parent, is_stdio};

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

    /// GB/T 32960 capture to write (`-` for standard output), as a platform would record
    /// the fleet's TCP streams: per vehicle a login, its frames as realtime reports and a
    /// logout, all vehicles interleaved in time order. Readings are quantised to the
    /// protocol's units (0.1 V and A, 1 % SOC, 1 mV per cell, 1 °C per probe) and times to
    /// the second; `bms ingest`, `bms daily` and `bms predict` read it back. The capture
    /// is assembled in memory, so keep fleets small.
    #[arg(long, value_name = "FILE")]
    pub gbt32960: Option<PathBuf>,

    /// Edition of the standard the capture follows: `2016` (`##` packets) or `2025`
    /// (`$$` packets, each report with an empty signature block).
    #[arg(long, default_value = "2016", value_parser = parse_edition, requires = "gbt32960")]
    pub edition: Edition,
}

/// Parses `2016` or `2025`.
pub fn parse_edition(s: &str) -> std::result::Result<Edition, String> {
    match s.trim() {
        "2016" => Ok(Edition::V2016),
        "2025" => Ok(Edition::V2025),
        _ => Err(format!(
            "'{s}' is not an edition of GB/T 32960.3 (2016 or 2025)"
        )),
    }
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
    if args.frames.is_none()
        && args.daily.is_none()
        && args.truth.is_none()
        && args.gbt32960.is_none()
    {
        bail!("nothing to write: give at least one of --frames, --daily, --truth, --gbt32960");
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
    for path in [&args.frames, &args.daily, &args.truth, &args.gbt32960]
        .into_iter()
        .flatten()
        .filter(|p| !is_stdio(p))
    {
        ensure_parent(path)?;
    }
    if let Some(path) = &args.gbt32960 {
        let started = Instant::now();
        let (packets, bytes) = write_capture(&config, args.edition, path)?;
        eprintln!(
            "{}: {packets} {} packets, {bytes} bytes in {:.2} s",
            super::shown(path, "<stdout>").display(),
            args.edition,
            started.elapsed().as_secs_f64()
        );
        if args.frames.is_none() && args.daily.is_none() && args.truth.is_none() {
            return Ok(());
        }
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

/// One vehicle's packets, encoded, with the time and order of each.
struct VehicleCapture {
    bytes: Vec<u8>,
    /// (time ms, vehicle index, sequence within the vehicle, start, end) per packet.
    packets: Vec<(i64, usize, usize, usize, usize)>,
}

/// Simulates every vehicle (in parallel) into its packets: a login at its first frame's
/// time, a realtime report per frame, a logout at its last frame's time.
fn vehicle_capture(config: &SimConfig, edition: Edition, index: usize) -> Result<VehicleCapture> {
    let mut cap = VehicleCapture {
        bytes: Vec::new(),
        packets: Vec::new(),
    };
    let mut frames = Vec::new();
    let truth = simulate::for_each_frame(config, index, |f| {
        let start = cap.bytes.len();
        encode::frame_packet_into(&mut cap.bytes, edition, command::REALTIME, f).map_err(|e| {
            bms_core::BmsError::invalid(
                "GB/T 32960 capture",
                format!("VIN {} at {} ms: {e}", f.vin, f.timestamp_ms),
            )
        })?;
        frames.push((f.timestamp_ms, start, cap.bytes.len()));
        Ok(())
    })?;
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
        return Ok(cap);
    };
    let (first, last) = (first.0, last.0);
    let login = encode::vehicle_login(
        edition,
        &truth.vin,
        first,
        1,
        &format!("8986{:016}", index),
        &[],
    )?;
    let logout = encode::vehicle_logout(edition, &truth.vin, last, 1)?;
    let n = frames.len();
    let push = |cap: &mut VehicleCapture, t: i64, seq: usize, bytes: &[u8]| {
        let start = cap.bytes.len();
        cap.bytes.extend_from_slice(bytes);
        cap.packets.push((t, index, seq, start, cap.bytes.len()));
    };
    push(&mut cap, first, 0, &login);
    push(&mut cap, last, n + 1, &logout);
    cap.packets.extend(
        frames
            .into_iter()
            .enumerate()
            .map(|(k, (t, a, b))| (t, index, k + 1, a, b)),
    );
    Ok(cap)
}

/// Writes the fleet's capture to `path` (`-`: stdout); (packets, bytes) written.
fn write_capture(config: &SimConfig, edition: Edition, path: &Path) -> Result<(usize, u64)> {
    let caps = (0..config.vehicles)
        .into_par_iter()
        .map(|i| vehicle_capture(config, edition, i))
        .collect::<Result<Vec<_>>>()?;
    let mut order: Vec<_> = caps
        .iter()
        .flat_map(|c| c.packets.iter().copied())
        .collect();
    // Time order across vehicles; a vehicle's login, reports and logout stay in sequence.
    order.sort_unstable_by_key(|&(t, v, seq, _, _)| (t, v, seq));
    let write = |w: &mut dyn Write| -> std::io::Result<u64> {
        let mut n = 0u64;
        for &(_, v, _, a, b) in &order {
            w.write_all(&caps[v].bytes[a..b])?;
            n += (b - a) as u64;
        }
        w.flush()?;
        Ok(n)
    };
    let bytes = if is_stdio(path) {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        write(&mut w).context("writing <stdout>")?
    } else {
        let mut file = io::AtomicFile::create(path)?;
        let n = write(&mut file.writer()).with_context(|| format!("writing {}", path.display()))?;
        file.commit()?;
        n
    };
    Ok((order.len(), bytes))
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
