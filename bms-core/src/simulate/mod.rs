//! Fleet simulator: synthetic BMS telemetry with a physical cause for consistency alarms.
//!
//! Nothing in the project may be downloaded, so tests, demos, benchmarks and the shipped
//! models train on this generator. Its alarms come from the mechanism the models must learn
//! (one cell drifting away from the others over weeks), not from a label rule.
//!
//! # Pack model
//!
//! A pack is `N` series cells (default 96) of one chemistry (NMC by default, LFP
//! selectable) whose open-circuit voltage is the shipped [`OcvCurve`] of that chemistry,
//! the same curve the feature code inverts. Cell `i` has capacity `Q_i = Q·(1 + 0.01·z)`
//! (`Q` = 150 Ah NMC, 160 Ah LFP), resistance `R_i = R·(1 + 0.03·z)` (`R` = 0.9 mΩ NMC,
//! 0.6 mΩ LFP), self-discharge `d_i ~ N(0.04, 0.010)` %/day and initial SOC
//! `s_i(0) = s_pack + 0.4·z` %, each `z` an independent standard normal.
//!
//! With pack current `I` (A, discharge positive as in GB/T 32960) and step `Δt`:
//!
//! ```text
//! s_i ← s_i − 100·I·Δt / (3600·Q_i) − d_i·Δt − b·Δt·[balancing ∧ s_i > min_j s_j + 0.2]
//! V_i = round_1mV( OCV(s_i) − I·R_i + ε_i ),   ε_i triangular on ±2.45 mV (σ ≈ 1.0 mV)
//! V_pack = Σ_i V_i
//! ```
//!
//! `round_1mV` and `round_1°C` round to the nearest step, ties to even. The per-cell step is
//! vectorised (four lanes, AVX2 where the CPU has it, no FMA) with every lane computing
//! exactly the scalar expression above, so outputs are identical on every x86-64 CPU.
//!
//! Passive balancing (`b` = 0.6 %/h) bleeds every cell more than 0.2 points above the
//! lowest one while charging above 85 % pack SOC, so spread recovers after full charges.
//!
//! Temperatures: the pack is one thermal mass `C` = 300 kJ/K cooled towards ambient with
//! time constant `τ` = 1.5 h,
//!
//! ```text
//! T_amb(t) = 15 + c_v + 12·sin(2π(doy − 110)/365.25) + 5·sin(2π(hour − 9)/24)   [°C]
//! dT/dt    = I²·Σ_i R_i / C − (T − T_amb)/τ
//! T_j      = round_1°C( T_amb + h_j·(T − T_amb) + o_j ),   h_j ~ U(0.8, 1.2), o_j ~ N(0, 0.55)
//! ```
//!
//! with `c_v ~ N(0, 3)` a per-vehicle climate offset; probes are quantised to 1 °C as
//! GB/T 32960 reports them. The BMS SOC is coulomb counted with a per-vehicle gain error
//! `g ~ N(1, 0.01)`, `SOC ← SOC − 100·g·I·Δt/(3600·Q)`, re-anchored to the true mean cell
//! SOC (± N(0, 0.5)) after rests over two hours and at the end of charges above 95 %, and
//! reported in whole percent. Pack current is reported to 0.1 A.
//!
//! # Weak cells and alarms
//!
//! A fraction of vehicles (`weak_fraction`, default 5 %) has one weak cell `w`. Its
//! severity ramps linearly from its onset day `t₀` over `r ~ U(20, 50)` days,
//! `σ(t) = clamp((t − t₀)/r, 0, 1.25)`, through one of three mechanisms:
//!
//! ```text
//! self-discharge    d_w = d_w⁰ + σ·m,       m ~ U(0.5, 0.9) %/day
//! capacity fade     Q_w = Q_w⁰·(1 − σ·m),   m ~ U(0.18, 0.30)
//! resistance growth R_w = R_w⁰·(1 + σ·m),   m ~ U(1.6, 2.6)
//! ```
//!
//! The first makes the weak cell's SOC fall behind between full charges (balancing pulls
//! the others down towards it, so the spread saw-tooths and grows only when the leak beats
//! the balancer), the second opens a SOC gap that grows with depth of discharge, the third
//! an `I·ΔR` gap under load; all make the voltage spread grow over weeks. A frame sets
//! alarm bit 10 ([`CONSISTENCY_ALARM_MASK`]) when the spread of its written (quantised)
//! cell voltages exceeds `alarm_spread_v` (0.10 V, the rule and threshold of
//! [`FeatureConfig::default`]), so the daily label of SPEC §4 follows from the frames.
//! Alarms start intermittently (low SOC, high current) and become daily; the pack is
//! repaired (weak cell restored to healthy, SOC set to the pack median) `U(20, 80)` days
//! after its first alarm. Healthy vehicles alarm only through a rare glitched reading
//! (120–200 mV low on one cell for one frame, probability 0.15 % per driving day).
//!
//! # Daily life
//!
//! Each day a vehicle is parked (no frames) with probability ≈ `parked_fraction` (a
//! per-vehicle value around it, default 35 %). A driving day has 1–4 trips of 8–40 min,
//! the first around 07:50 UTC, with an Ornstein–Uhlenbeck current around a per-trip mean of
//! 12–45 A (time constant 15 s, so accelerations reach ~2C and regeneration gives negative
//! current). After the last trip the car charges when its SOC is below a per-vehicle
//! threshold (30–55 %) or on a whim (15 %): AC at 25–40 A to 88–100 % or DC at 0.6–1C to
//! 80–92 %, with the current tapering above 85 %. Frames are emitted every `interval_ms`
//! (10 s by default; GB/T 32960 requires at most 30 s) during trips and charges. Days are
//! UTC calendar days, as `bms daily` uses by default.
//!
//! # Calibration
//!
//! With [`SimConfig::default`] (200 vehicles × 120 days) the daily table matches the
//! real-format statistics of SPEC §4; a test asserts the ranges. Measured at the 10 s
//! default interval: 98.9 % of day means of TotalVoltage in 340–395 V, 34.4 % empty days,
//! 1.44 % of labelled days are alarm days, median daily CellMax − CellMin 0.0158 V on
//! normal days and 0.083 V on alarm days, median MaxTemperature − MinTemperature 2.29 °C.
//! (Debug builds run that test at a 30 s interval to stay fast; the ranges hold there too.)
//!
//! # Determinism
//!
//! Vehicle `k` draws from a ChaCha8 stream keyed by `(seed, k)` only, and fleets are
//! assembled in a fixed order, so the same configuration gives byte-identical outputs
//! whatever the number of threads. Output rows are sorted by VIN, like
//! [`crate::daily::aggregate`].

mod vehicle;
pub mod vin;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::NaiveDate;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::daily::{DailyConfig, DailyRow, DailyTable, UtcOffset, VehicleAggregator, day_of_date};
use crate::error::{BmsError, Result};
use crate::features::{DEFAULT_ALARM_SPREAD_V, FeatureConfig};
use crate::frame::{FrameRef, Frames};
use crate::io::AtomicFile;
use crate::io::frame_csv::{FrameCsvWriter, FrameWriteError};
use crate::io::parquet::FramesParquetWriter;
use crate::ocv::{Chemistry, OcvCurve};
use vehicle::{OcvTable, Vehicle};

#[cfg(doc)]
use crate::frame::CONSISTENCY_ALARM_MASK;

/// The longest sample interval accepted (one hour). GB/T 32960 requires at most 30 s;
/// longer intervals are accepted for fast tests and are not standard-compliant.
pub const MAX_INTERVAL_MS: u32 = 3_600_000;
/// The GB/T 32960 limit on the sample interval.
pub const GBT_MAX_INTERVAL_MS: u32 = 30_000;

/// What the simulator generates. `Default` is the calibrated fleet of SPEC §4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Number of vehicles.
    pub vehicles: usize,
    /// Number of calendar days, starting at `start`.
    pub days: u32,
    /// Seed of every random draw.
    pub seed: u64,
    /// First simulated day (UTC).
    pub start: NaiveDate,
    /// Cells in series per pack.
    pub cells: usize,
    /// Temperature probes per pack.
    pub probes: usize,
    /// Sample interval during trips and charges, milliseconds.
    pub interval_ms: u32,
    /// Cell chemistry (OCV curve and cell parameters).
    pub chemistry: Chemistry,
    /// Fraction of vehicles with a weak cell, 0–1.
    pub weak_fraction: f64,
    /// Typical fraction of days a vehicle is parked (no frames), 0–1.
    pub parked_fraction: f64,
    /// Cell spread (V) above which a frame sets the consistency alarm bit.
    pub alarm_spread_v: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            vehicles: 200,
            days: 120,
            seed: 0,
            start: NaiveDate::from_ymd_opt(2024, 1, 1).expect("valid date"),
            cells: 96,
            probes: 32,
            interval_ms: 10_000,
            chemistry: Chemistry::Nmc,
            weak_fraction: 0.05,
            parked_fraction: 0.35,
            alarm_spread_v: DEFAULT_ALARM_SPREAD_V,
        }
    }
}

impl SimConfig {
    /// Checks every field; the error names the field and the accepted range. Intervals
    /// between 30 s and 1 h are accepted although GB/T 32960 requires at most 30 s
    /// (see [`SimConfig::gbt_compliant_interval`]).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, reason: String| Err(BmsError::invalid(what, reason));
        if self.vehicles == 0 || self.vehicles > vin::MAX_VEHICLES {
            return bad(
                "vehicles",
                format!("{} (must be 1 to {})", self.vehicles, vin::MAX_VEHICLES),
            );
        }
        if self.days == 0 || self.days > 36_600 {
            return bad("days", format!("{} (must be 1 to 36600)", self.days));
        }
        if self.cells == 0 || self.cells > 10_000 {
            return bad("cells", format!("{} (must be 1 to 10000)", self.cells));
        }
        if self.probes == 0 || self.probes > 10_000 {
            return bad("probes", format!("{} (must be 1 to 10000)", self.probes));
        }
        if self.interval_ms < 100 || self.interval_ms > MAX_INTERVAL_MS {
            return bad(
                "interval",
                format!(
                    "{} ms (must be 100 ms to 1 h; GB/T 32960 requires at most 30 s)",
                    self.interval_ms
                ),
            );
        }
        for (what, v) in [
            ("weak fraction", self.weak_fraction),
            ("parked fraction", self.parked_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(what, format!("{v} (must be between 0 and 1)"));
            }
        }
        if !(self.alarm_spread_v.is_finite() && self.alarm_spread_v >= 0.0) {
            return bad(
                "alarm spread threshold",
                format!("{} V (must be a finite number ≥ 0)", self.alarm_spread_v),
            );
        }
        let end = day_number(self.start) + self.days as i64;
        if crate::daily::date_of_day(end).is_none() || end * 86_400_000 > i64::MAX / 2 {
            return bad(
                "start",
                format!("{} + {} days is out of range", self.start, self.days),
            );
        }
        Ok(())
    }

    /// Whether the interval meets GB/T 32960's limit of 30 s.
    pub fn gbt_compliant_interval(&self) -> bool {
        self.interval_ms <= GBT_MAX_INTERVAL_MS
    }

    /// The daily aggregation matching this fleet: the chemistry's OCV curve, the same alarm
    /// threshold, UTC days.
    pub fn daily_config(&self) -> DailyConfig {
        DailyConfig {
            features: FeatureConfig {
                ocv: OcvCurve::for_chemistry(self.chemistry),
                alarm_spread_v: self.alarm_spread_v,
            },
            utc_offset: UtcOffset::UTC,
        }
    }
}

pub(crate) fn day_number(date: NaiveDate) -> i64 {
    day_of_date(date)
}

/// How a weak cell degrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeakMechanism {
    SelfDischarge,
    CapacityFade,
    ResistanceGrowth,
}

impl WeakMechanism {
    /// The name used in truth files.
    pub fn name(self) -> &'static str {
        match self {
            WeakMechanism::SelfDischarge => "self_discharge",
            WeakMechanism::CapacityFade => "capacity_fade",
            WeakMechanism::ResistanceGrowth => "resistance_growth",
        }
    }
}

/// What the simulator knows about one vehicle and a model must infer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VehicleTruth {
    pub vin: String,
    /// Whether the pack has a weak cell.
    pub weak: bool,
    /// 0-based index of the weak cell (column `cell_v_{index+1}` of a frame CSV).
    pub weak_cell: Option<usize>,
    pub mechanism: Option<WeakMechanism>,
    /// First day of non-zero severity; may precede the simulation start (the fault was
    /// already developing).
    pub onset_date: Option<NaiveDate>,
    /// First day with an alarm frame (from the simulated frames, any vehicle).
    pub first_alarm_date: Option<NaiveDate>,
    /// Day the weak cell was repaired, if within the simulation.
    pub repair_date: Option<NaiveDate>,
    /// Number of days with at least one alarm frame.
    pub alarm_days: u32,
}

/// A simulated fleet's daily table (sorted by VIN, then date) and truth (sorted by VIN).
#[derive(Debug, Clone, PartialEq)]
pub struct SimOutput {
    pub table: DailyTable,
    pub truth: Vec<VehicleTruth>,
    /// Number of frames simulated.
    pub frames: u64,
}

/// Simulates vehicle `index` of the fleet, handing each frame to `on_frame` in time order.
/// An error from `on_frame` stops the simulation and is returned.
pub fn for_each_frame(
    config: &SimConfig,
    index: usize,
    mut on_frame: impl FnMut(&FrameRef<'_>) -> Result<()>,
) -> Result<VehicleTruth> {
    config.validate()?;
    let ocv = OcvTable::new(&OcvCurve::for_chemistry(config.chemistry));
    Vehicle::new(config, &ocv, index).run(&mut on_frame)
}

/// Simulates vehicle `index` and streams its frames into a [`VehicleAggregator`]
/// (the aggregation of `bms daily`); returns its dense daily rows, truth and frame count.
fn vehicle_daily(
    config: &SimConfig,
    daily: &DailyConfig,
    ocv: &OcvTable,
    index: usize,
    mut extra: impl FnMut(&FrameRef<'_>) -> Result<()>,
) -> Result<(Vec<DailyRow>, VehicleTruth, u64)> {
    let vehicle = Vehicle::new(config, ocv, index);
    let mut agg = VehicleAggregator::new(vehicle.vin(), daily.clone());
    let mut n = 0u64;
    let truth = vehicle.run(&mut |f| {
        n += 1;
        agg.push(f, n)?;
        extra(f)
    })?;
    Ok((agg.finish(), truth, n))
}

fn assemble(mut parts: Vec<(Vec<DailyRow>, VehicleTruth, u64)>) -> SimOutput {
    parts.sort_by(|a, b| a.1.vin.cmp(&b.1.vin));
    let frames = parts.iter().map(|p| p.2).sum();
    let mut rows = Vec::with_capacity(parts.iter().map(|p| p.0.len()).sum());
    let mut truth = Vec::with_capacity(parts.len());
    for (r, t, _) in parts {
        rows.extend(r);
        truth.push(t);
    }
    SimOutput {
        table: DailyTable { rows },
        truth,
        frames,
    }
}

/// Simulates the fleet straight into its daily table without materialising frames,
/// vehicles in parallel on the current rayon pool. `progress(done, total)` is called after
/// each vehicle, from worker threads.
pub fn simulate_daily_with_progress(
    config: &SimConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<SimOutput> {
    config.validate()?;
    let daily = config.daily_config();
    let ocv = OcvTable::new(&daily.features.ocv);
    let done = AtomicUsize::new(0);
    let parts = (0..config.vehicles)
        .into_par_iter()
        .map(|i| {
            let r = vehicle_daily(config, &daily, &ocv, i, |_| Ok(()));
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, config.vehicles);
            r
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(assemble(parts))
}

/// [`simulate_daily_with_progress`] without progress reports.
pub fn simulate_daily(config: &SimConfig) -> Result<SimOutput> {
    simulate_daily_with_progress(config, &|_, _| {})
}

/// Format of a simulated frames file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// Frame CSV of SPEC §2, `alarm_flags` column included.
    Csv,
    /// Frame Parquet with list columns.
    Parquet,
}

enum Buffered {
    Csv(Vec<u8>),
    Parquet(Box<Frames>),
}

/// Simulates the fleet, writing every frame to `path` (vehicles in index order, each in
/// time order) and aggregating the daily table from the same frames. Vehicles are
/// simulated in parallel in batches of the pool's thread count, so memory holds one
/// batch's frames; nothing appears at `path` unless the whole run succeeds.
pub fn simulate_to_frames(
    config: &SimConfig,
    path: &Path,
    format: FrameFormat,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<SimOutput> {
    config.validate()?;
    let daily = config.daily_config();
    let ocv = OcvTable::new(&daily.features.ocv);
    let batch = rayon::current_num_threads().max(1);
    let mut parts = Vec::with_capacity(config.vehicles);
    let (mut csv_file, mut pq) = match format {
        FrameFormat::Csv => {
            let mut f = AtomicFile::create(path)?;
            let (_, header) = FrameCsvWriter::new(config.cells, config.probes, true);
            f.file()
                .write_all(header.as_bytes())
                .map_err(|e| BmsError::io(path, e))?;
            (Some(f), None)
        }
        FrameFormat::Parquet => (None, Some(FramesParquetWriter::create(path)?)),
    };
    let mut start = 0;
    while start < config.vehicles {
        let end = (start + batch).min(config.vehicles);
        let outs = (start..end)
            .into_par_iter()
            .map(|i| {
                let mut buf = match format {
                    FrameFormat::Csv => Buffered::Csv(Vec::new()),
                    FrameFormat::Parquet => Buffered::Parquet(Box::default()),
                };
                let (mut writer, _) = FrameCsvWriter::new(config.cells, config.probes, true);
                let mut line = 0u64;
                let part = vehicle_daily(config, &daily, &ocv, i, |f| {
                    line += 1;
                    match &mut buf {
                        Buffered::Csv(text) => writer.write_frame(text, f).map_err(|e| match e {
                            FrameWriteError::Io(e) => BmsError::io(path, e),
                            FrameWriteError::Bms(b) => b,
                        }),
                        Buffered::Parquet(frames) => {
                            frames.push(*f, line);
                            Ok(())
                        }
                    }
                })?;
                Ok((part, buf))
            })
            .collect::<Result<Vec<_>>>()?;
        for (part, buf) in outs {
            match buf {
                Buffered::Csv(text) => csv_file
                    .as_mut()
                    .expect("CSV output")
                    .file()
                    .write_all(&text)
                    .map_err(|e| BmsError::io(path, e))?,
                Buffered::Parquet(frames) => {
                    pq.as_mut().expect("Parquet output").write(frames.iter())?
                }
            }
            parts.push(part);
        }
        start = end;
        progress(end, config.vehicles);
    }
    if let Some(f) = csv_file {
        f.commit()?;
    }
    if let Some(w) = pq {
        w.finish()?;
    }
    Ok(assemble(parts))
}

/// The truth file's header.
pub const TRUTH_HEADER: &str =
    "vin,weak,weak_cell,mechanism,onset_date,first_alarm_date,repair_date,alarm_days";

/// Writes truth rows as CSV ([`TRUTH_HEADER`]; empty fields for absent values; `weak_cell`
/// 0-based), atomically.
pub fn write_truth_csv(path: &Path, truth: &[VehicleTruth]) -> Result<()> {
    let mut out = String::with_capacity(64 * (truth.len() + 1));
    out.push_str(TRUTH_HEADER);
    out.push('\n');
    let opt = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    for t in truth {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            t.vin,
            t.weak as u8,
            t.weak_cell.map(|c| c.to_string()).unwrap_or_default(),
            t.mechanism.map(|m| m.name()).unwrap_or_default(),
            opt(t.onset_date),
            opt(t.first_alarm_date),
            opt(t.repair_date),
            t.alarm_days
        ));
    }
    let mut f = AtomicFile::create(path)?;
    f.file()
        .write_all(out.as_bytes())
        .map_err(|e| BmsError::io(path, e))?;
    f.commit()
}

#[cfg(test)]
mod tests;
