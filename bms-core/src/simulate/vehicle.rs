//! One vehicle's life: cell states, daily schedule, trips, charging and frame emission.
//! The equations are in the module docs of [`crate::simulate`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{SimConfig, VehicleTruth, WeakMechanism, vin::make_vin};
use crate::daily::date_of_day;
use crate::error::Result;
use crate::frame::{CONSISTENCY_ALARM_MASK, FrameRef};
use crate::ocv::{Chemistry, OcvCurve};

const DAY_MS: i64 = 86_400_000;
/// SOC grid step of [`OcvTable`] (percent); every shipped curve has its breakpoints on it.
const OCV_STEP: f64 = 0.05;
const OCV_POINTS: usize = 2001;

/// The forward OCV curve sampled on a 0.05 % grid. The shipped curves are piecewise linear
/// with breakpoints at multiples of 5 %, so linear interpolation on this grid reproduces
/// [`OcvCurve::volts_at`] up to rounding, at the cost of one table read.
#[derive(Debug, Clone)]
pub(crate) struct OcvTable {
    volts: Vec<f64>,
}

impl OcvTable {
    pub(crate) fn new(curve: &OcvCurve) -> Self {
        OcvTable {
            volts: (0..OCV_POINTS)
                .map(|k| curve.volts_at(k as f64 * OCV_STEP))
                .collect(),
        }
    }
}

/// Per-chemistry cell parameters.
struct CellType {
    capacity_ah: f64,
    resistance_ohm: f64,
}

fn cell_type(chemistry: Chemistry) -> CellType {
    match chemistry {
        Chemistry::Nmc => CellType {
            capacity_ah: 150.0,
            resistance_ohm: 0.9e-3,
        },
        Chemistry::Lfp => CellType {
            capacity_ah: 160.0,
            resistance_ohm: 0.6e-3,
        },
    }
}

/// Relative spread (standard deviation) of cell capacity.
const CAPACITY_SPREAD: f64 = 0.01;
/// Relative spread of cell resistance.
const RESISTANCE_SPREAD: f64 = 0.03;
/// Mean and spread of healthy self-discharge, percent of capacity per day.
const SELF_DISCHARGE: (f64, f64) = (0.04, 0.010);
/// Spread of initial cell SOC around the pack SOC, percentage points.
const INITIAL_SOC_SPREAD: f64 = 0.4;
/// Half-width of the triangular cell-voltage sensor noise, volts (σ = 1.0 mV).
const SENSOR_NOISE_V: f64 = 2.45e-3;
/// Passive balancing bleed, percent of capacity per hour, while charging above
/// [`BALANCE_ABOVE_SOC`] for cells more than [`BALANCE_DEADBAND`] above the lowest cell.
const BALANCE_RATE: f64 = 0.6;
const BALANCE_ABOVE_SOC: f64 = 85.0;
const BALANCE_DEADBAND: f64 = 0.2;
/// Pack heat capacity (J/K) and cooling time constant (s).
const HEAT_CAPACITY: f64 = 300e3;
const COOLING_TAU_S: f64 = 5400.0;
/// Probability per driving day of one glitched cell reading (a loose sense wire).
const GLITCH_PER_DAY: f64 = 0.0015;
/// Weak-cell severity keeps growing up to this multiple of its nominal magnitude.
const SEVERITY_CAP: f64 = 1.25;

/// A weak cell and its fault schedule (days counted from the simulation start).
#[derive(Debug, Clone)]
struct Weak {
    cell: usize,
    mechanism: WeakMechanism,
    onset_day: f64,
    ramp_days: f64,
    magnitude: f64,
    repair_delay_days: i64,
    repaired_day: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Drive { mean_a: f64 },
    Charge { current_a: f64, target_soc: f64 },
}

/// The state of one simulated vehicle.
pub(crate) struct Vehicle<'a> {
    cfg: &'a SimConfig,
    ocv: &'a OcvTable,
    rng: ChaCha8Rng,
    vin: String,
    start_ms: i64,
    now_ms: i64,
    soc: Vec<f64>,
    /// Percent SOC per ampere-second, per cell.
    k: Vec<f64>,
    k_base: Vec<f64>,
    r: Vec<f64>,
    r_base: Vec<f64>,
    /// Percent per second.
    sd: Vec<f64>,
    sd_base: Vec<f64>,
    soc_min: f64,
    soc_sum: f64,
    /// Sum of the cell readings of the current step, whole millivolts (exact in `f64`).
    mv_sum: f64,
    /// Lowest and highest cell reading of the current step, whole millivolts.
    mv_range: (f64, f64),
    probe_offset: Vec<f64>,
    probe_heat: Vec<f64>,
    t_pack: f64,
    climate_offset: f64,
    soc_cc: f64,
    cc_gain: f64,
    nominal_k: f64,
    active_p: f64,
    charge_below: f64,
    dc_share: f64,
    weak: Option<Weak>,
    glitch_in: Option<u32>,
    last_alarm_day: Option<i64>,
    first_alarm_day: Option<i64>,
    alarm_days: u32,
    cell_v: Vec<f64>,
    /// Per-cell sensor-noise bits of the current step.
    noise: Vec<u32>,
    /// Scratch of [`step_cells`].
    pos: Vec<f64>,
    temps: Vec<f64>,
}

/// The RNG of vehicle `index`: a function of (seed, index) only.
fn vehicle_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    key[16..24].copy_from_slice(b"bms-sim1");
    ChaCha8Rng::from_seed(key)
}

fn normal(rng: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
    mean + sd * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, rng)
}

impl<'a> Vehicle<'a> {
    pub(crate) fn new(cfg: &'a SimConfig, ocv: &'a OcvTable, index: usize) -> Self {
        let mut rng = vehicle_rng(cfg.seed, index);
        let vin = make_vin(&mut rng, index);
        let ct = cell_type(cfg.chemistry);
        let n = cfg.cells;
        let pack_soc = rng.random_range(40.0..90.0);
        let mut soc = Vec::with_capacity(n);
        let mut k = Vec::with_capacity(n);
        let mut r = Vec::with_capacity(n);
        let mut sd = Vec::with_capacity(n);
        for _ in 0..n {
            soc.push(normal(&mut rng, pack_soc, INITIAL_SOC_SPREAD));
            let q = ct.capacity_ah * normal(&mut rng, 1.0, CAPACITY_SPREAD).max(0.5);
            k.push(100.0 / (3600.0 * q));
            r.push(ct.resistance_ohm * normal(&mut rng, 1.0, RESISTANCE_SPREAD).max(0.5));
            sd.push(normal(&mut rng, SELF_DISCHARGE.0, SELF_DISCHARGE.1).max(0.0) / 86_400.0);
        }
        let probe_offset = (0..cfg.probes)
            .map(|_| normal(&mut rng, 0.0, 0.55))
            .collect();
        let probe_heat = (0..cfg.probes)
            .map(|_| rng.random_range(0.8..1.2))
            .collect();
        let weak = (rng.random::<f64>() < cfg.weak_fraction).then(|| {
            let mechanism = match rng.random_range(0..3) {
                0 => WeakMechanism::SelfDischarge,
                1 => WeakMechanism::CapacityFade,
                _ => WeakMechanism::ResistanceGrowth,
            };
            let ramp_days = rng.random_range(20.0..50.0);
            let magnitude = match mechanism {
                WeakMechanism::SelfDischarge => rng.random_range(0.5..0.9),
                WeakMechanism::CapacityFade => rng.random_range(0.18..0.30),
                WeakMechanism::ResistanceGrowth => rng.random_range(1.6..2.6),
            };
            Weak {
                cell: rng.random_range(0..n),
                mechanism,
                onset_day: rng.random_range(-0.5 * ramp_days..0.75 * cfg.days as f64),
                ramp_days,
                magnitude,
                repair_delay_days: rng.random_range(20..80),
                repaired_day: None,
            }
        });
        let start_ms = super::day_number(cfg.start) * DAY_MS;
        let mean_soc = soc.iter().sum::<f64>() / n as f64;
        let nominal_k = 100.0 / (3600.0 * ct.capacity_ah);
        Vehicle {
            cfg,
            ocv,
            climate_offset: normal(&mut rng, 0.0, 3.0),
            cc_gain: normal(&mut rng, 1.0, 0.01),
            active_p: (1.0 - cfg.parked_fraction + normal(&mut rng, 0.0, 0.08)).clamp(0.2, 1.0),
            charge_below: rng.random_range(30.0..55.0),
            dc_share: rng.random_range(0.3..0.7),
            rng,
            vin,
            start_ms,
            now_ms: start_ms,
            soc_min: soc.iter().copied().fold(f64::INFINITY, f64::min),
            soc_sum: mean_soc * n as f64,
            mv_sum: 0.0,
            mv_range: (0.0, 0.0),
            k_base: k.clone(),
            k,
            r_base: r.clone(),
            r,
            sd_base: sd.clone(),
            sd,
            soc,
            probe_offset,
            probe_heat,
            t_pack: f64::NAN,
            soc_cc: mean_soc,
            nominal_k,
            weak,
            glitch_in: None,
            last_alarm_day: None,
            first_alarm_day: None,
            alarm_days: 0,
            cell_v: vec![0.0; n],
            noise: vec![0; n],
            pos: vec![0.0; n],
            temps: vec![0.0; cfg.probes],
        }
    }

    pub(crate) fn vin(&self) -> &str {
        &self.vin
    }

    fn ambient(&self, t_ms: i64) -> f64 {
        let days = t_ms as f64 / DAY_MS as f64;
        let doy = days.rem_euclid(365.25);
        let hour = days.fract() * 24.0;
        15.0 + self.climate_offset
            + 12.0 * (std::f64::consts::TAU * (doy - 110.0) / 365.25).sin()
            + 5.0 * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin()
    }

    fn mean_soc(&self) -> f64 {
        self.soc_sum / self.soc.len() as f64
    }

    fn refresh_soc_summary(&mut self) {
        self.soc_min = self.soc.iter().copied().fold(f64::INFINITY, f64::min);
        self.soc_sum = self.soc.iter().sum();
    }

    /// Lets the pack rest until `t_ms`: self-discharge, cooling, BMS SOC recalibration.
    fn rest_until(&mut self, t_ms: i64) {
        let dt = (t_ms - self.now_ms) as f64 / 1000.0;
        if dt <= 0.0 {
            return;
        }
        for (s, &d) in self.soc.iter_mut().zip(&self.sd) {
            *s -= d * dt;
        }
        self.refresh_soc_summary();
        let ta = self.ambient(t_ms);
        self.t_pack = if self.t_pack.is_nan() {
            ta
        } else {
            ta + (self.t_pack - ta) * (-dt / COOLING_TAU_S).exp()
        };
        if dt > 7200.0 {
            self.soc_cc = self.mean_soc() + normal(&mut self.rng, 0.0, 0.5);
        }
        self.now_ms = t_ms;
    }

    /// Applies the weak cell's severity (and repair) for simulation day `day`.
    fn update_weak(&mut self, day: i64) {
        let Some(w) = &mut self.weak else { return };
        if w.repaired_day.is_some() {
            return;
        }
        let c = w.cell;
        if let Some(first) = self.first_alarm_day
            && day >= first + w.repair_delay_days
        {
            w.repaired_day = Some(day);
            self.k[c] = self.k_base[c];
            self.r[c] = self.r_base[c];
            self.sd[c] = self.sd_base[c];
            let mut others: Vec<f64> = self.soc.clone();
            others.sort_by(f64::total_cmp);
            self.soc[c] = others[others.len() / 2];
            self.refresh_soc_summary();
            return;
        }
        let s = ((day as f64 - w.onset_day) / w.ramp_days).clamp(0.0, SEVERITY_CAP);
        match w.mechanism {
            WeakMechanism::SelfDischarge => {
                self.sd[c] = self.sd_base[c] + s * w.magnitude / 86_400.0;
            }
            WeakMechanism::CapacityFade => self.k[c] = self.k_base[c] / (1.0 - s * w.magnitude),
            WeakMechanism::ResistanceGrowth => self.r[c] = self.r_base[c] * (1.0 + s * w.magnitude),
        }
    }

    /// Runs the whole simulation, handing every frame to `emit` in time order.
    pub(crate) fn run(
        mut self,
        emit: &mut dyn FnMut(&FrameRef<'_>) -> Result<()>,
    ) -> Result<VehicleTruth> {
        let days = self.cfg.days as i64;
        for day in 0..days {
            self.update_weak(day);
            let day_ms = self.start_ms + day * DAY_MS;
            if self.rng.random::<f64>() < self.active_p {
                self.drive_day(day_ms, emit)?;
            }
        }
        let date = |d: i64| date_of_day(super::day_number(self.cfg.start) + d);
        let weak = self.weak.as_ref();
        Ok(VehicleTruth {
            vin: self.vin.clone(),
            weak: weak.is_some(),
            weak_cell: weak.map(|w| w.cell),
            mechanism: weak.map(|w| w.mechanism),
            onset_date: weak.and_then(|w| date(w.onset_day.ceil() as i64)),
            first_alarm_date: self.first_alarm_day.and_then(date),
            repair_date: weak.and_then(|w| w.repaired_day).and_then(date),
            alarm_days: self.alarm_days,
        })
    }

    fn hours(&mut self, lo: f64, hi: f64) -> i64 {
        (self.rng.random_range(lo..hi) * 3_600_000.0) as i64
    }

    fn drive_day(
        &mut self,
        day_ms: i64,
        emit: &mut dyn FnMut(&FrameRef<'_>) -> Result<()>,
    ) -> Result<()> {
        let interval = self.cfg.interval_ms as i64;
        if self.rng.random::<f64>() < GLITCH_PER_DAY {
            self.glitch_in = Some(self.rng.random_range(0..200));
        }
        let first = (normal(&mut self.rng, 7.8, 0.8).clamp(5.0, 11.0) * 3_600_000.0) as i64;
        let mut t = (day_ms + first).max(self.now_ms + interval);
        if self.mean_soc() < 20.0 {
            let current = -self.rng.random_range(0.6..1.0) / (self.nominal_k * 36.0);
            t = self.session(
                t,
                Mode::Charge {
                    current_a: current,
                    target_soc: 80.0,
                },
                3.0,
                emit,
            )?;
            t += self.hours(0.05, 0.5);
        }
        let trips = [1, 2, 2, 2, 3, 3, 4][self.rng.random_range(0..7)];
        for n in 0..trips {
            if n > 0 {
                t += self.hours(0.5, 8.0);
            }
            if t > day_ms + 22 * 3_600_000 {
                break;
            }
            let mean_a = self.rng.random_range(12.0..45.0);
            let hours = self.rng.random_range(8.0..40.0) / 60.0;
            t = self.session(t, Mode::Drive { mean_a }, hours, emit)?;
        }
        if self.mean_soc() < self.charge_below || self.rng.random::<f64>() < 0.15 {
            t += self.hours(0.1, 1.5);
            let mode = if self.rng.random::<f64>() < self.dc_share {
                Mode::Charge {
                    current_a: -self.rng.random_range(0.6..1.0) / (self.nominal_k * 36.0),
                    target_soc: self.rng.random_range(80.0..92.0),
                }
            } else {
                Mode::Charge {
                    current_a: -self.rng.random_range(25.0..40.0),
                    target_soc: self.rng.random_range(88.0..100.0),
                }
            };
            self.session(t, mode, 8.0, emit)?;
        }
        Ok(())
    }

    /// Simulates one trip or charging session starting at `t_ms`, for at most `max_hours`;
    /// returns the time after its last frame.
    fn session(
        &mut self,
        t_ms: i64,
        mode: Mode,
        max_hours: f64,
        emit: &mut dyn FnMut(&FrameRef<'_>) -> Result<()>,
    ) -> Result<i64> {
        self.rest_until(t_ms);
        let interval = self.cfg.interval_ms as i64;
        let dt = interval as f64 / 1000.0;
        let steps = ((max_hours * 3_600_000.0) as i64 / interval).max(1);
        let ou_a = (-dt / 15.0).exp();
        let ou_b = (1.0 - ou_a * ou_a).sqrt();
        let mut current = match mode {
            Mode::Drive { mean_a } => mean_a,
            Mode::Charge { current_a, .. } => current_a,
        };
        let capacity_a = 1.0 / (self.nominal_k * 36.0);
        let r_pack: f64 = self.r.iter().sum();
        let mut t = t_ms;
        for _ in 0..steps {
            let mean_soc = self.mean_soc();
            let balancing = match mode {
                Mode::Drive { mean_a } => {
                    if self.soc_min < 8.0 {
                        break;
                    }
                    let z: f64 = StandardNormal.sample(&mut self.rng);
                    current = mean_a + (current - mean_a) * ou_a + (0.9 * mean_a + 10.0) * ou_b * z;
                    current = current.clamp(-0.6 * capacity_a, 1.8 * capacity_a);
                    false
                }
                Mode::Charge {
                    current_a,
                    target_soc,
                } => {
                    if mean_soc >= target_soc {
                        break;
                    }
                    let taper = ((100.0 - mean_soc) / 15.0).clamp(0.08, 1.0);
                    current = current_a * taper;
                    mean_soc > BALANCE_ABOVE_SOC
                }
            };
            let ta = self.ambient(t);
            self.t_pack += dt
                * (current * current * r_pack / HEAT_CAPACITY - (self.t_pack - ta) / COOLING_TAU_S);
            self.step_cells(current, dt, balancing);
            self.soc_cc -= current * dt * self.nominal_k * self.cc_gain;
            for (j, out) in self.temps.iter_mut().enumerate() {
                *out =
                    round_ne(ta + (self.t_pack - ta) * self.probe_heat[j] + self.probe_offset[j]);
            }
            if let Some(g) = &mut self.glitch_in {
                if *g == 0 {
                    let c = self.rng.random_range(0..self.cell_v.len());
                    let mv = (self.cell_v[c] * 1000.0).round()
                        - self.rng.random_range(120.0..200.0_f64).round();
                    self.cell_v[c] = mv / 1000.0;
                    self.mv_range.0 = self.mv_range.0.min(mv);
                    self.glitch_in = None;
                } else {
                    *g -= 1;
                }
            }
            let (lo, hi) = self.mv_range;
            // The spread rule of SPEC §3 on the values emitted (as the features compute it).
            let alarm = hi / 1000.0 - lo / 1000.0 > self.cfg.alarm_spread_v;
            if alarm {
                let day = (t - self.start_ms).div_euclid(DAY_MS);
                if self.last_alarm_day != Some(day) {
                    self.last_alarm_day = Some(day);
                    self.alarm_days += 1;
                    self.first_alarm_day.get_or_insert(day);
                }
            }
            let frame = FrameRef {
                vin: &self.vin,
                timestamp_ms: t,
                pack_voltage: self.mv_sum / 1000.0,
                pack_current: (current * 10.0).round() / 10.0,
                soc: self.soc_cc.round().clamp(0.0, 100.0),
                cell_voltages: &self.cell_v,
                temperatures: &self.temps,
                alarm_flags: Some(if alarm { CONSISTENCY_ALARM_MASK } else { 0 }),
            };
            emit(&frame)?;
            t += interval;
        }
        if matches!(mode, Mode::Charge { .. }) && self.mean_soc() > 95.0 {
            self.soc_cc = self.mean_soc();
        }
        self.now_ms = t;
        Ok(t)
    }

    /// Advances every cell by one step at pack current `current` (A, discharge positive) and
    /// writes the quantised terminal voltages into `cell_v`.
    #[inline]
    fn step_cells(&mut self, current: f64, dt: f64, balancing: bool) {
        self.rng.fill(&mut self.noise[..]);
        let p = StepParams {
            bleed: if balancing {
                BALANCE_RATE / 3600.0 * dt
            } else {
                0.0
            },
            floor: self.soc_min + BALANCE_DEADBAND,
            charge: current * dt,
            current,
            dt,
        };
        let cells = Cells {
            soc: &mut self.soc,
            k: &self.k,
            sd: &self.sd,
            r: &self.r,
            noise: &self.noise,
            out: &mut self.cell_v,
            pos: &mut self.pos,
        };
        let s = step_cells(cells, &self.ocv.volts, &p);
        self.soc_min = s.soc_min;
        self.soc_sum = s.soc_sum;
        self.mv_sum = s.mv_sum;
        self.mv_range = (s.mv_min, s.mv_max);
    }
}

/// Per-step constants of [`step_cells`].
struct StepParams {
    bleed: f64,
    floor: f64,
    charge: f64,
    current: f64,
    dt: f64,
}

/// The per-cell state and outputs that one step reads and writes.
struct Cells<'a> {
    soc: &'a mut [f64],
    k: &'a [f64],
    sd: &'a [f64],
    r: &'a [f64],
    noise: &'a [u32],
    out: &'a mut [f64],
    /// Scratch: the OCV grid position, then the OCV.
    pos: &'a mut [f64],
}

impl Cells<'_> {
    /// The number of cells, after asserting that every slice has it and that `table` is
    /// the full OCV grid: the unchecked reads of both step paths rely on this.
    fn checked_len(&self, table: &[f64]) -> usize {
        let n = self.soc.len();
        assert!(
            self.k.len() == n
                && self.sd.len() == n
                && self.r.len() == n
                && self.noise.len() == n
                && self.out.len() == n
                && self.pos.len() == n
        );
        assert!(table.len() == OCV_POINTS);
        n
    }
}

/// What one step reports about the pack (sums of whole millivolts are exact in `f64`).
struct StepSummary {
    soc_min: f64,
    soc_sum: f64,
    mv_sum: f64,
    mv_min: f64,
    mv_max: f64,
}

/// Rounds to the nearest integer, ties to even, for |x| < 2⁵¹: adding and subtracting
/// 1.5 · 2⁵² leaves the integer part only. Plain adds, so it vectorises (unlike a libm
/// call or a saturating float-to-int cast). Differs from [`f64::round`] only on exact ties.
#[inline(always)]
fn round_ne(x: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    (x + MAGIC) - MAGIC
}

/// Cells per lane group. Cell `i` always accumulates into lane `i % LANES`, whatever the
/// instruction set, so the SSE2 and AVX2 builds of [`step_cells`] give identical results.
const LANES: usize = 4;

#[inline(always)]
fn min(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

#[inline(always)]
fn max(a: f64, b: f64) -> f64 {
    if b > a { b } else { a }
}

/// Pass (1) for one cell: new SOC (with balancing bleed) and its OCV grid position, in
/// [0, OCV_POINTS - 1) and never NaN.
#[inline(always)]
fn soc_step(soc: f64, k: f64, sd: f64, p: &StepParams) -> (f64, f64) {
    const TOP: f64 = (OCV_POINTS - 1) as f64 - 1e-9;
    let mut s = soc - p.charge * k - sd * p.dt;
    if s > p.floor {
        s -= p.bleed;
    }
    let x = s * (1.0 / OCV_STEP);
    let x = if x > 0.0 { x } else { 0.0 }; // also maps NaN to 0
    (s, if x < TOP { x } else { TOP })
}

/// Pass (3) for one cell: terminal voltage with triangular sensor noise, in whole millivolts.
#[inline(always)]
fn millivolts(ocv: f64, r: f64, bits: u32, p: &StepParams) -> f64 {
    let tri = ((bits & 0xFFFF) + (bits >> 16)) as i32 as f64 / 65_536.0 - 1.0;
    round_ne((ocv - p.current * r + SENSOR_NOISE_V * tri) * 1000.0)
}

/// Running per-lane summaries of one step.
struct LaneSums {
    soc_min: [f64; LANES],
    soc_sum: [f64; LANES],
    mv_sum: [f64; LANES],
    mv_min: [f64; LANES],
    mv_max: [f64; LANES],
}

impl LaneSums {
    #[inline(always)]
    fn soc(&mut self, l: usize, s: f64) {
        self.soc_min[l] = min(self.soc_min[l], s);
        self.soc_sum[l] += s;
    }

    #[inline(always)]
    fn mv(&mut self, l: usize, mv: f64) {
        self.mv_sum[l] += mv;
        self.mv_min[l] = min(self.mv_min[l], mv);
        self.mv_max[l] = max(self.mv_max[l], mv);
    }

    /// Combines the lanes, always in the same order.
    #[inline(always)]
    fn finish(&self) -> StepSummary {
        let m = self;
        StepSummary {
            soc_min: min(
                min(m.soc_min[0], m.soc_min[1]),
                min(m.soc_min[2], m.soc_min[3]),
            ),
            soc_sum: (m.soc_sum[0] + m.soc_sum[1]) + (m.soc_sum[2] + m.soc_sum[3]),
            mv_sum: (m.mv_sum[0] + m.mv_sum[1]) + (m.mv_sum[2] + m.mv_sum[3]),
            mv_min: min(min(m.mv_min[0], m.mv_min[1]), min(m.mv_min[2], m.mv_min[3])),
            mv_max: max(max(m.mv_max[0], m.mv_max[1]), max(m.mv_max[2], m.mv_max[3])),
        }
    }
}

/// Pass (2) for one cell: the OCV at grid position `x` by linear interpolation (what
/// [`OcvTable`] holds, read without bounds checks on the hot path).
#[inline(always)]
fn ocv_at(table: &[f64], x: f64) -> f64 {
    debug_assert!((0.0..(OCV_POINTS - 1) as f64).contains(&x));
    // SAFETY: soc_step puts x in [0, OCV_POINTS - 1), never NaN, so the truncation is in
    // range for i32.
    let j = unsafe { x.to_int_unchecked::<i32>() } as usize;
    let f = x - j as f64;
    let a = table[j];
    a + f * (table[j + 1] - a)
}

/// Three passes, the first and last straight-line over groups of [`LANES`] cells so that
/// the compiler vectorises them: (1) SOC update, balancing and the OCV grid position,
/// (2) the table reads (a gather), (3) terminal voltage, 1 mV quantisation and the sums.
/// Cells past the last whole group go through the same per-cell functions.
#[inline(always)]
fn step_cells_body(c: Cells<'_>, table: &[f64], p: &StepParams) -> StepSummary {
    let n = c.checked_len(table);
    let whole = n - n % LANES;
    let mut sums = LaneSums {
        soc_min: [f64::INFINITY; LANES],
        soc_sum: [0.0; LANES],
        mv_sum: [0.0; LANES],
        mv_min: [f64::INFINITY; LANES],
        mv_max: [f64::NEG_INFINITY; LANES],
    };

    // (1)
    let (soc, soc_tail) = c.soc.split_at_mut(whole);
    let (pos, pos_tail) = c.pos.split_at_mut(whole);
    let groups = soc
        .chunks_exact_mut(LANES)
        .zip(c.k.chunks_exact(LANES))
        .zip(c.sd.chunks_exact(LANES))
        .zip(pos.chunks_exact_mut(LANES));
    for (((soc, k), sd), pos) in groups {
        for l in 0..LANES {
            let (s, x) = soc_step(soc[l], k[l], sd[l], p);
            soc[l] = s;
            pos[l] = x;
            sums.soc(l, s);
        }
    }
    for (l, (soc, pos)) in soc_tail.iter_mut().zip(pos_tail.iter_mut()).enumerate() {
        let (s, x) = soc_step(*soc, c.k[whole + l], c.sd[whole + l], p);
        *soc = s;
        *pos = x;
        sums.soc(l, s);
    }

    // (2) OCV by linear interpolation on the grid.
    for x in c.pos.iter_mut() {
        *x = ocv_at(table, *x);
    }

    // (3)
    let (out, out_tail) = c.out.split_at_mut(whole);
    let groups = c
        .pos
        .chunks_exact(LANES)
        .zip(c.r.chunks_exact(LANES))
        .zip(c.noise.chunks_exact(LANES))
        .zip(out.chunks_exact_mut(LANES));
    for (((ocv, r), noise), out) in groups {
        for l in 0..LANES {
            let mv = millivolts(ocv[l], r[l], noise[l], p);
            out[l] = mv / 1000.0;
            sums.mv(l, mv);
        }
    }
    for (l, out) in out_tail.iter_mut().enumerate() {
        let i = whole + l;
        let mv = millivolts(c.pos[i], c.r[i], c.noise[i], p);
        *out = mv / 1000.0;
        sums.mv(l, mv);
    }

    sums.finish()
}

/// [`step_cells_body`] in AVX2 intrinsics, four cells per group: the same operations in the
/// same order per cell and per lane (no FMA), so the results are bit-identical (a test holds
/// them equal on random states).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn step_cells_avx2(c: Cells<'_>, table: &[f64], p: &StepParams) -> StepSummary {
    use std::arch::x86_64::*;
    const TOP: f64 = (OCV_POINTS - 1) as f64 - 1e-9;
    let n = c.checked_len(table);
    let whole = n - n % LANES;
    let set = |x: f64| _mm256_set1_pd(x);
    let (charge, dt, floor, bleed, current) = (
        set(p.charge),
        set(p.dt),
        set(p.floor),
        set(p.bleed),
        set(p.current),
    );
    let (zero, top, grid) = (set(0.0), set(TOP), set(1.0 / OCV_STEP));
    let (noise_v, two16, one, thousand, magic) = (
        set(SENSOR_NOISE_V),
        set(65_536.0),
        set(1.0),
        set(1000.0),
        set(6_755_399_441_055_744.0),
    );
    let low16 = _mm_set1_epi32(0xFFFF);
    let mut soc_min = set(f64::INFINITY);
    let mut soc_sum = zero;
    let mut mv_sum = zero;
    let mut mv_min = set(f64::INFINITY);
    let mut mv_max = set(f64::NEG_INFINITY);
    for i in (0..whole).step_by(LANES) {
        // SAFETY: i + LANES <= n for every slice (lengths asserted above); the gather
        // indices j are in [0, OCV_POINTS - 2] because x is in [0, TOP] (never NaN: max
        // maps NaN to 0), so j and j + 1 index the table.
        unsafe {
            let soc = _mm256_loadu_pd(c.soc.as_ptr().add(i));
            let k = _mm256_loadu_pd(c.k.as_ptr().add(i));
            let sd = _mm256_loadu_pd(c.sd.as_ptr().add(i));
            let s = _mm256_sub_pd(
                _mm256_sub_pd(soc, _mm256_mul_pd(charge, k)),
                _mm256_mul_pd(sd, dt),
            );
            let above = _mm256_cmp_pd::<_CMP_GT_OQ>(s, floor);
            let s = _mm256_blendv_pd(s, _mm256_sub_pd(s, bleed), above);
            _mm256_storeu_pd(c.soc.as_mut_ptr().add(i), s);
            soc_min = _mm256_min_pd(s, soc_min);
            soc_sum = _mm256_add_pd(soc_sum, s);
            let x = _mm256_min_pd(_mm256_max_pd(_mm256_mul_pd(s, grid), zero), top);

            let j = _mm256_cvttpd_epi32(x);
            let f = _mm256_sub_pd(x, _mm256_cvtepi32_pd(j));
            let a = _mm256_i32gather_pd::<8>(table.as_ptr(), j);
            let b = _mm256_i32gather_pd::<8>(table.as_ptr().add(1), j);
            let ocv = _mm256_add_pd(a, _mm256_mul_pd(f, _mm256_sub_pd(b, a)));

            let r = _mm256_loadu_pd(c.r.as_ptr().add(i));
            let bits = _mm_loadu_si128(c.noise.as_ptr().add(i).cast());
            let sum16 = _mm_add_epi32(_mm_and_si128(bits, low16), _mm_srli_epi32::<16>(bits));
            let tri = _mm256_sub_pd(_mm256_div_pd(_mm256_cvtepi32_pd(sum16), two16), one);
            let v = _mm256_add_pd(
                _mm256_sub_pd(ocv, _mm256_mul_pd(current, r)),
                _mm256_mul_pd(noise_v, tri),
            );
            let mv = _mm256_sub_pd(_mm256_add_pd(_mm256_mul_pd(v, thousand), magic), magic);
            _mm256_storeu_pd(c.out.as_mut_ptr().add(i), _mm256_div_pd(mv, thousand));
            mv_sum = _mm256_add_pd(mv_sum, mv);
            mv_min = _mm256_min_pd(mv, mv_min);
            mv_max = _mm256_max_pd(mv, mv_max);
        }
    }
    let lanes = |v: __m256d| {
        let mut out = [0.0; LANES];
        // SAFETY: out holds LANES = 4 f64.
        unsafe { _mm256_storeu_pd(out.as_mut_ptr(), v) };
        out
    };
    let mut sums = LaneSums {
        soc_min: lanes(soc_min),
        soc_sum: lanes(soc_sum),
        mv_sum: lanes(mv_sum),
        mv_min: lanes(mv_min),
        mv_max: lanes(mv_max),
    };
    for i in whole..n {
        let l = i - whole;
        let (s, x) = soc_step(c.soc[i], c.k[i], c.sd[i], p);
        c.soc[i] = s;
        sums.soc(l, s);
        let mv = millivolts(ocv_at(table, x), c.r[i], c.noise[i], p);
        c.out[i] = mv / 1000.0;
        sums.mv(l, mv);
    }
    sums.finish()
}

/// Advances every cell one step (SOC with balancing, terminal voltage, 1 mV quantisation)
/// and summarises the pack. Uses AVX2 where the CPU has it (no FMA: same results).
fn step_cells(c: Cells<'_>, table: &[f64], p: &StepParams) -> StepSummary {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { step_cells_avx2(c, table, p) };
    }
    step_cells_body(c, table, p)
}

#[cfg(test)]
mod step_tests {
    use super::*;

    /// One random cell state of `n` cells, SOCs spanning and exceeding the OCV grid.
    struct State {
        soc: Vec<f64>,
        k: Vec<f64>,
        sd: Vec<f64>,
        r: Vec<f64>,
        noise: Vec<u32>,
    }

    fn state(rng: &mut ChaCha8Rng, n: usize) -> State {
        State {
            soc: (0..n).map(|_| rng.random_range(-5.0..105.0)).collect(),
            k: (0..n).map(|_| rng.random_range(1.5e-4..2.5e-4)).collect(),
            sd: (0..n).map(|_| rng.random_range(0.0..2e-6)).collect(),
            r: (0..n).map(|_| rng.random_range(5e-4..3e-3)).collect(),
            noise: (0..n).map(|_| rng.random()).collect(),
        }
    }

    fn run(
        st: &State,
        table: &[f64],
        p: &StepParams,
        f: fn(Cells<'_>, &[f64], &StepParams) -> StepSummary,
    ) -> (Vec<f64>, Vec<f64>, [f64; 5]) {
        let n = st.soc.len();
        let mut soc = st.soc.clone();
        let mut out = vec![0.0; n];
        let mut pos = vec![0.0; n];
        let cells = Cells {
            soc: &mut soc,
            k: &st.k,
            sd: &st.sd,
            r: &st.r,
            noise: &st.noise,
            out: &mut out,
            pos: &mut pos,
        };
        let s = f(cells, table, p);
        (
            soc,
            out,
            [s.soc_min, s.soc_sum, s.mv_sum, s.mv_min, s.mv_max],
        )
    }

    #[test]
    fn step_paths_are_bit_identical_and_match_the_definitions() {
        let table = OcvTable::new(&OcvCurve::for_chemistry(Chemistry::Nmc)).volts;
        let mut rng = vehicle_rng(7, 0);
        for n in [1, 3, 4, 5, 8, 31, 96, 97] {
            for round_no in 0..50 {
                let st = state(&mut rng, n);
                let current = rng.random_range(-300.0..400.0);
                let p = StepParams {
                    bleed: if round_no % 2 == 0 { 0.01 } else { 0.0 },
                    floor: rng.random_range(0.0..100.0),
                    charge: current * 10.0,
                    current,
                    dt: 10.0,
                };
                let portable = run(&st, &table, &p, step_cells_body);
                // Against the plain per-cell definitions.
                let mut mv_sum = 0.0;
                for i in 0..n {
                    let mut s = st.soc[i] - p.charge * st.k[i] - st.sd[i] * p.dt;
                    if s > p.floor {
                        s -= p.bleed;
                    }
                    assert_eq!(portable.0[i].to_bits(), s.to_bits(), "n {n} cell {i}");
                    let ocv = OcvCurve::for_chemistry(Chemistry::Nmc).volts_at(s.clamp(0.0, 100.0));
                    let tri =
                        ((st.noise[i] & 0xFFFF) + (st.noise[i] >> 16)) as f64 / 65_536.0 - 1.0;
                    let v = ocv - current * st.r[i] + SENSOR_NOISE_V * tri;
                    let mv = (portable.1[i] * 1000.0).round();
                    assert_eq!(portable.1[i], mv / 1000.0, "whole millivolts");
                    assert!(
                        (mv - v * 1000.0).abs() <= 0.5 + 1e-6,
                        "n {n} cell {i}: {mv} vs {v}"
                    );
                    mv_sum += mv;
                }
                let sum = portable.2;
                assert_eq!(sum[2], mv_sum);
                let lo = portable.0.iter().copied().fold(f64::INFINITY, f64::min);
                assert_eq!(sum[0], lo);
                let total: f64 = portable.0.iter().sum();
                assert!((sum[1] - total).abs() <= 1e-9 * total.abs().max(1.0));
                let mvs: Vec<f64> = portable.1.iter().map(|v| (v * 1000.0).round()).collect();
                assert_eq!(sum[3], mvs.iter().copied().fold(f64::INFINITY, f64::min));
                assert_eq!(
                    sum[4],
                    mvs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                );

                let dispatched = run(&st, &table, &p, step_cells);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&portable.0), bits(&dispatched.0), "soc, n {n}");
                assert_eq!(bits(&portable.1), bits(&dispatched.1), "volts, n {n}");
                assert_eq!(bits(&portable.2), bits(&dispatched.2), "summary, n {n}");
            }
        }
    }

    #[test]
    fn nan_soc_reads_the_bottom_of_the_curve_instead_of_faulting() {
        let table = OcvTable::new(&OcvCurve::for_chemistry(Chemistry::Nmc)).volts;
        let x = soc_step(
            f64::NAN,
            1.0,
            0.0,
            &StepParams {
                bleed: 0.0,
                floor: 0.0,
                charge: 0.0,
                current: 0.0,
                dt: 1.0,
            },
        )
        .1;
        assert_eq!(x, 0.0);
        assert_eq!(ocv_at(&table, x), table[0]);
    }
}
