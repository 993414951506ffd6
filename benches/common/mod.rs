//! Deterministic synthetic inputs shared by the benches (no I/O, no RNG crate).
#![allow(dead_code)]

use bms_core::daily::{DailyColumn, DailyRow, DailyTable};
use chrono::{Days, NaiveDate};

/// xorshift64*: fast, deterministic, good enough for bench data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` realistic frames, flat and frame-major: each frame's pack sits at a random voltage
/// between 3.45 and 4.15 V per cell, its cells scatter ±~5 mV around it (1 mV steps), 2 %
/// of frames carry a cell 60–150 mV low; `probes` temperatures at 1 °C steps.
pub fn frame_buffers(n: usize, cells: usize, probes: usize) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(42);
    let mut v = Vec::with_capacity(n * cells);
    for _ in 0..n {
        let base = 3.45 + 0.7 * rng.next_f64();
        let weak = rng.next_f64() < 0.02;
        for c in 0..cells {
            let noise = (rng.next_f64() + rng.next_f64() - 1.0) * 0.008;
            let drop = if weak && c == 7 {
                0.06 + 0.09 * rng.next_f64()
            } else {
                0.0
            };
            v.push(((base + noise - drop) * 1000.0).round() / 1000.0);
        }
    }
    let t = (0..n * probes)
        .map(|_| (20.0 + 10.0 * rng.next_f64()).round())
        .collect();
    (v, t)
}

/// Worst case for the SOC features: cells uniform over 3.6–3.9 V (a 300 mV spread that
/// crosses several OCV breakpoints in every frame).
pub fn frame_buffers_wide(n: usize, cells: usize, probes: usize) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(43);
    let v = (0..n * cells)
        .map(|_| ((3.6 + 0.3 * rng.next_f64()) * 1000.0).round() / 1000.0)
        .collect();
    let t = (0..n * probes)
        .map(|_| (20.0 + 10.0 * rng.next_f64()).round())
        .collect();
    (v, t)
}

/// A dense daily table of `vehicles × days` rows with ~35 % empty days and ~2 % alarms.
pub fn daily_table(vehicles: usize, days: usize) -> DailyTable {
    let mut rng = Rng::new(7);
    let start = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    let mut rows = Vec::with_capacity(vehicles * days);
    for v in 0..vehicles {
        let vin = format!("LBENCH{v:011}");
        for d in 0..days {
            let date = start + Days::new(d as u64);
            if rng.next_f64() < 0.35 {
                rows.push(DailyRow::empty(&vin, date));
                continue;
            }
            let mut r = DailyRow::empty(&vin, date);
            for c in DailyColumn::ALL {
                r.set(c, 100.0 * rng.next_f64());
            }
            r.label = if rng.next_f64() < 0.02 { 1.0 } else { 0.0 };
            rows.push(r);
        }
    }
    DailyTable { rows }
}

/// The reference-shaped bench model (`benches/data/xgb_ref.onnx`, made by
/// `make_bench_model.py`).
pub fn bench_model_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/xgb_ref.onnx")
}

/// `n` rows of `width` model inputs: standard normal-ish values (sum of two uniforms,
/// scaled) with ~3 % NaN, row-major.
pub fn model_rows(n: usize, width: usize) -> Vec<f32> {
    let mut rng = Rng::new(11);
    (0..n * width)
        .map(|_| {
            if rng.next_f64() < 0.03 {
                f32::NAN
            } else {
                ((rng.next_f64() + rng.next_f64() - 1.0) * 2.5) as f32
            }
        })
        .collect()
}
