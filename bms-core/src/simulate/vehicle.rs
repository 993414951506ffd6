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

    #[inline]
    fn volts(&self, soc: f64) -> f64 {
        let x = (soc * (1.0 / OCV_STEP)).clamp(0.0, (OCV_POINTS - 1) as f64 - 1e-9);
        let i = x as usize;
        let f = x - i as f64;
        let a = self.volts[i];
        a + f * (self.volts[i + 1] - a)
    }
}

/// Rounds half away from zero like [`f64::round`] for |x| < 2⁶², without a libm call
/// (this is on the per-cell hot path).
#[inline]
fn round(x: f64) -> f64 {
    if x >= 0.0 {
        (x + 0.5) as i64 as f64
    } else {
        -((0.5 - x) as i64 as f64)
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
    mv_sum: i64,
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
            mv_sum: 0,
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
                    (ta + (self.t_pack - ta) * self.probe_heat[j] + self.probe_offset[j]).round();
            }
            if let Some(g) = &mut self.glitch_in {
                if *g == 0 {
                    let c = self.rng.random_range(0..self.cell_v.len());
                    let mv =
                        (self.cell_v[c] * 1000.0).round() - self.rng.random_range(120.0..200.0);
                    self.cell_v[c] = mv / 1000.0;
                    self.glitch_in = None;
                } else {
                    *g -= 1;
                }
            }
            let mut vmax = f64::NEG_INFINITY;
            let mut vmin = f64::INFINITY;
            for &v in &self.cell_v {
                vmax = vmax.max(v);
                vmin = vmin.min(v);
            }
            let alarm = vmax - vmin > self.cfg.alarm_spread_v;
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
                pack_voltage: self.mv_sum as f64 / 1000.0,
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
        let bleed = if balancing {
            BALANCE_RATE / 3600.0 * dt
        } else {
            0.0
        };
        let floor = self.soc_min + BALANCE_DEADBAND;
        let charge = current * dt;
        let mut new_min = f64::INFINITY;
        let mut sum = 0.0;
        let mut mv_sum = 0i64;
        self.rng.fill(&mut self.noise[..]);
        let ocv = self.ocv;
        let cells = self
            .soc
            .iter_mut()
            .zip(&self.k)
            .zip(&self.sd)
            .zip(&self.r)
            .zip(self.cell_v.iter_mut().zip(&self.noise));
        for ((((soc, &k), &sd), &r), (out, &bits)) in cells {
            let mut s = *soc - charge * k - sd * dt;
            if s > floor {
                s -= bleed;
            }
            *soc = s;
            new_min = new_min.min(s);
            sum += s;
            let tri = ((bits & 0xFFFF) + (bits >> 16)) as f64 / 65_536.0 - 1.0;
            let v = ocv.volts(s) - current * r + SENSOR_NOISE_V * tri;
            let mv = round(v * 1000.0);
            mv_sum += mv as i64;
            *out = mv / 1000.0;
        }
        self.soc_min = new_min;
        self.soc_sum = sum;
        self.mv_sum = mv_sum;
    }
}
