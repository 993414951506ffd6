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
    /// the second; `bms ingest`, `bms daily` and `bms predict` read it back. Memory stays
    /// bounded whatever the fleet's size (the packets are spilled to a temporary file next
    /// to FILE, or in the system's temporary directory for `-`, and merged by time).
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
    super::check_outputs(
        [&args.frames, &args.daily, &args.truth, &args.gbt32960]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path),
    )?;
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

/// Simulates vehicle `index` into its packets: a login at its first frame's time, a
/// realtime report per frame, a logout at its last frame's time (nothing for a vehicle
/// without frames).
fn vehicle_packets(config: &SimConfig, edition: Edition, index: usize) -> Result<Vec<u8>> {
    let mut reports = Vec::new();
    let mut times = None;
    let truth = simulate::for_each_frame(config, index, |f| {
        encode::frame_packet_into(&mut reports, edition, command::REALTIME, f).map_err(|e| {
            bms_core::BmsError::invalid(
                "GB/T 32960 capture",
                format!("VIN {} at {} ms: {e}", f.vin, f.timestamp_ms),
            )
        })?;
        let (first, _) = times.get_or_insert((f.timestamp_ms, f.timestamp_ms));
        times = Some((*first, f.timestamp_ms));
        Ok(())
    })?;
    let Some((first, last)) = times else {
        return Ok(Vec::new());
    };
    let iccid = format!("8986{index:016}");
    let mut out = encode::vehicle_login(edition, &truth.vin, first, 1, &iccid, &[])?;
    out.extend_from_slice(&reports);
    out.extend(encode::vehicle_logout(edition, &truth.vin, last, 1)?);
    Ok(out)
}

/// Bytes read at a time from each vehicle's run of packets while merging.
const MERGE_CHUNK: usize = 8 << 10;

/// One vehicle's packets in the spill file: `[next, end)` not yet buffered, `buf[pos..]`
/// buffered and not yet written.
struct Run {
    next: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Run {
    /// The next packet, read from `file` as needed; `None` at the end of the run.
    fn peek(&mut self, file: &mut std::fs::File) -> std::io::Result<Option<&[u8]>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut fill = |run: &mut Run, need: usize| -> std::io::Result<bool> {
            let have = run.buf.len() - run.pos;
            if have >= need {
                return Ok(true);
            }
            let left = run.end - run.next;
            if have as u64 + left < need as u64 {
                return Ok(false);
            }
            run.buf.drain(..run.pos);
            run.pos = 0;
            let take = (need - have).max(MERGE_CHUNK).min(left as usize);
            let at = run.buf.len();
            run.buf.resize(at + take, 0);
            file.seek(SeekFrom::Start(run.next))?;
            file.read_exact(&mut run.buf[at..])?;
            run.next += take as u64;
            Ok(true)
        };
        if !fill(self, 24)? {
            return Ok(None);
        }
        let h = &self.buf[self.pos..];
        let total = 25 + usize::from(u16::from_be_bytes([h[22], h[23]]));
        if !fill(self, total)? {
            return Err(std::io::Error::other(
                "a packet runs past its vehicle's run",
            ));
        }
        Ok(Some(&self.buf[self.pos..self.pos + total]))
    }
}

/// The time of a packet the simulator wrote (every one carries a time), in whole seconds.
fn packet_time(p: &[u8]) -> i64 {
    let t: &[u8; 6] = p[24..30].try_into().expect("a time");
    bms_core::gbt32960::time_to_utc_ms(t).expect("the encoder wrote a valid time")
}

/// Writes the fleet's capture to `path` (`-`: stdout); (packets, bytes) written.
///
/// Vehicles are simulated in parallel in batches of the pool's thread count and their
/// packets spilled to a temporary file, one run per vehicle, each in time order. The runs
/// are then merged by packet time (ties: vehicle order), so memory holds one batch's
/// packets and a small buffer per vehicle, whatever the fleet's size.
fn write_capture(config: &SimConfig, edition: Edition, path: &Path) -> Result<(usize, u64)> {
    let dir = match path.parent() {
        _ if is_stdio(path) => std::env::temp_dir(),
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut spill = tempfile::tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut runs = Vec::with_capacity(config.vehicles);
    let mut at = 0u64;
    let batch = rayon::current_num_threads().max(1);
    let mut start = 0;
    while start < config.vehicles {
        let end = (start + batch).min(config.vehicles);
        let packets = (start..end)
            .into_par_iter()
            .map(|i| vehicle_packets(config, edition, i))
            .collect::<Result<Vec<_>>>()?;
        for p in packets {
            spill
                .write_all(&p)
                .context("writing the temporary capture")?;
            runs.push(Run {
                next: at,
                end: at + p.len() as u64,
                buf: Vec::new(),
                pos: 0,
            });
            at += p.len() as u64;
        }
        start = end;
    }
    let mut merge = |w: &mut dyn Write| -> std::io::Result<(usize, u64)> {
        use std::cmp::Reverse;
        let mut heap = std::collections::BinaryHeap::new();
        for (v, run) in runs.iter_mut().enumerate() {
            if let Some(p) = run.peek(&mut spill)? {
                heap.push(Reverse((packet_time(p), v)));
            }
        }
        let (mut packets, mut bytes) = (0, 0u64);
        while let Some(Reverse((_, v))) = heap.pop() {
            let run = &mut runs[v];
            let p = run.peek(&mut spill)?.expect("peeked before");
            w.write_all(p)?;
            packets += 1;
            bytes += p.len() as u64;
            run.pos += p.len();
            if let Some(p) = run.peek(&mut spill)? {
                heap.push(Reverse((packet_time(p), v)));
            }
        }
        w.flush()?;
        Ok((packets, bytes))
    };
    if is_stdio(path) {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        merge(&mut w).context("writing <stdout>")
    } else {
        let mut file = io::AtomicFile::create(path)?;
        let n = merge(&mut file.writer()).with_context(|| format!("writing {}", path.display()))?;
        file.commit()?;
        Ok(n)
    }
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
