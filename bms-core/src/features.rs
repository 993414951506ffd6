//! Frame features (SPEC §3): per-frame statistics of cell voltages and probe temperatures,
//! SOC deviation and bias through an OCV curve, and the consistency-alarm flag.
//!
//! NaN readings are excluded from every statistic; a statistic over zero valid values is
//! NaN (and an index over zero valid values is `None`).

use serde::{Deserialize, Serialize};

use crate::error::{BmsError, Result};
use crate::frame::{CONSISTENCY_ALARM_MASK, FrameRef};
use crate::ocv::{Chemistry, OcvCurve};

/// Default spread above which the rule-based consistency alarm fires (volts).
pub const DEFAULT_ALARM_SPREAD_V: f64 = 0.10;

/// How frame features are computed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureConfig {
    pub ocv: OcvCurve,
    /// `consistency_alarm` fires when `cell_v_spread` is strictly greater than this, for
    /// frames without alarm flags.
    pub alarm_spread_v: f64,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            ocv: OcvCurve::nmc(),
            alarm_spread_v: DEFAULT_ALARM_SPREAD_V,
        }
    }
}

impl FeatureConfig {
    pub fn new(ocv: OcvCurve, alarm_spread_v: f64) -> Result<Self> {
        if !(alarm_spread_v.is_finite() && alarm_spread_v >= 0.0) {
            return Err(BmsError::invalid(
                "alarm spread threshold",
                format!("{alarm_spread_v} V (must be a finite number ≥ 0)"),
            ));
        }
        Ok(FeatureConfig {
            ocv,
            alarm_spread_v,
        })
    }

    pub fn for_chemistry(chemistry: Chemistry) -> Self {
        FeatureConfig {
            ocv: OcvCurve::for_chemistry(chemistry),
            alarm_spread_v: DEFAULT_ALARM_SPREAD_V,
        }
    }
}

/// The features of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameFeatures {
    pub cell_v_max: f64,
    pub cell_v_min: f64,
    pub cell_v_spread: f64,
    pub cell_v_mean: f64,
    /// Population standard deviation.
    pub cell_v_std: f64,
    /// 0-based index of the first maximal valid cell.
    pub cell_v_max_idx: Option<usize>,
    /// 0-based index of the first minimal valid cell.
    pub cell_v_min_idx: Option<usize>,
    pub temp_max: f64,
    pub temp_min: f64,
    pub temp_delta: f64,
    pub temp_mean: f64,
    /// Max − min of per-cell SOC, percentage points.
    pub soc_deviation: f64,
    /// BMS SOC − mean per-cell SOC, percentage points.
    pub soc_bias: f64,
    pub consistency_alarm: bool,
}

/// Names of the [`FrameFeatures`] columns, in order, as every surface exposes them.
pub const FRAME_FEATURE_NAMES: [&str; 14] = [
    "cell_v_max",
    "cell_v_min",
    "cell_v_spread",
    "cell_v_mean",
    "cell_v_std",
    "cell_v_max_idx",
    "cell_v_min_idx",
    "temp_max",
    "temp_min",
    "temp_delta",
    "temp_mean",
    "soc_deviation",
    "soc_bias",
    "consistency_alarm",
];

/// Names of the float-valued [`FrameFeatures`] columns, in the order of
/// [`FrameFeatures::floats`]: [`FRAME_FEATURE_NAMES`] without the two cell indices and the
/// alarm flag.
pub const FRAME_FEATURE_FLOAT_NAMES: [&str; 11] = {
    let n = FRAME_FEATURE_NAMES;
    [
        n[0], n[1], n[2], n[3], n[4], n[7], n[8], n[9], n[10], n[11], n[12],
    ]
};

impl FrameFeatures {
    /// The float-valued features, in the order of [`FRAME_FEATURE_FLOAT_NAMES`].
    pub fn floats(&self) -> [f64; 11] {
        [
            self.cell_v_max,
            self.cell_v_min,
            self.cell_v_spread,
            self.cell_v_mean,
            self.cell_v_std,
            self.temp_max,
            self.temp_min,
            self.temp_delta,
            self.temp_mean,
            self.soc_deviation,
            self.soc_bias,
        ]
    }
}

/// Computes the features of one frame.
pub fn frame_features(frame: &FrameRef<'_>, config: &FeatureConfig) -> FrameFeatures {
    let cells = cell_stats(frame.cell_voltages, &config.ocv);
    let (temp_max, temp_min, temp_mean) = temp_stats(frame.temperatures);
    let cell_v_spread = cells.max - cells.min;
    let consistency_alarm = match frame.alarm_flags {
        Some(flags) => flags & CONSISTENCY_ALARM_MASK != 0,
        None => cell_v_spread > config.alarm_spread_v,
    };
    // Per-cell SOC is monotone in voltage, so its extremes sit at the voltage extremes.
    let soc_deviation = config.ocv.soc_at(cells.max) - config.ocv.soc_at(cells.min);
    FrameFeatures {
        cell_v_max: cells.max,
        cell_v_min: cells.min,
        cell_v_spread,
        cell_v_mean: cells.mean,
        cell_v_std: cells.std,
        cell_v_max_idx: cells.max_idx,
        cell_v_min_idx: cells.min_idx,
        temp_max,
        temp_min,
        temp_delta: temp_max - temp_min,
        temp_mean,
        soc_deviation,
        soc_bias: frame.soc - cells.soc_mean,
        consistency_alarm,
    }
}

struct CellStats {
    max: f64,
    min: f64,
    mean: f64,
    std: f64,
    max_idx: Option<usize>,
    min_idx: Option<usize>,
    soc_mean: f64,
}

/// One pass over the cells: extremes, shifted sums for mean and variance (shifting by the
/// first valid value keeps the variance exact to rounding at cell-voltage magnitudes), and
/// the sum of per-cell SOC.
#[inline]
fn cell_stats(v: &[f64], ocv: &OcvCurve) -> CellStats {
    let Some(&k) = v.iter().find(|x| !x.is_nan()) else {
        return CellStats {
            max: f64::NAN,
            min: f64::NAN,
            mean: f64::NAN,
            std: f64::NAN,
            max_idx: None,
            min_idx: None,
            soc_mean: f64::NAN,
        };
    };
    let Moments {
        max,
        min,
        n: nf,
        mean_d,
        sq,
    } = moments(v, k);
    CellStats {
        max,
        min,
        mean: k + mean_d,
        std: (sq - mean_d * mean_d).max(0.0).sqrt(),
        max_idx: first_equal(v, max),
        min_idx: first_equal(v, min),
        soc_mean: ocv.mean_soc(v, min, max, k + mean_d, nf),
    }
}

/// Extremes, count, and mean and mean square of `x − k` over the valid values of `v`.
struct Moments {
    max: f64,
    min: f64,
    n: f64,
    mean_d: f64,
    sq: f64,
}

/// [`Moments`] of `v` shifted by `k`, a valid element of `v` (shifting by a value of the data
/// keeps the variance exact to rounding at cell-voltage magnitudes).
#[inline]
fn moments(v: &[f64], k: f64) -> Moments {
    let mut lanes = lanes_entry(v, k);
    for (l, &x) in v.chunks_exact(4).remainder().iter().enumerate() {
        lanes.step(l, x, k);
    }
    let Lanes {
        max,
        min,
        s1,
        s2,
        cnt,
    } = lanes;
    let n = (cnt[0] + cnt[1]) + (cnt[2] + cnt[3]);
    Moments {
        max: max[0].max(max[1]).max(max[2].max(max[3])),
        min: min[0].min(min[1]).min(min[2].min(min[3])),
        n,
        mean_d: ((s1[0] + s1[1]) + (s1[2] + s1[3])) / n,
        sq: ((s2[0] + s2[1]) + (s2[2] + s2[3])) / n,
    }
}

/// Per-lane extremes, shifted sums and counts of the valid cells: lane `l` holds the
/// cells whose index is `l` mod 4 (the trailing `len % 4` cells are left to the caller).
/// A NaN loses every comparison and adds zero to the sums and the count.
struct Lanes {
    max: [f64; 4],
    min: [f64; 4],
    s1: [f64; 4],
    s2: [f64; 4],
    cnt: [f64; 4],
}

impl Lanes {
    /// Adds `x` to lane `l`; the vector versions do exactly this per lane.
    #[inline]
    fn step(&mut self, l: usize, x: f64, k: f64) {
        let ok = !x.is_nan();
        self.max[l] = if x > self.max[l] { x } else { self.max[l] };
        self.min[l] = if x < self.min[l] { x } else { self.min[l] };
        let d = if ok { x - k } else { 0.0 };
        self.s1[l] += d;
        self.s2[l] += d * d;
        self.cnt[l] += if ok { 1.0 } else { 0.0 };
    }
}

/// [`Lanes`] with SSE2 (baseline on x86-64): the same operations in the same order as the
/// portable version, so results are bit-identical on every architecture.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn lanes(v: &[f64], k: f64) -> Lanes {
    use std::arch::x86_64::*;
    let kk = _mm_set1_pd(k);
    let one = _mm_set1_pd(1.0);
    let zero = _mm_setzero_pd();
    let (mut max_a, mut max_b, mut min_a, mut min_b) = (kk, kk, kk, kk);
    let (mut s1_a, mut s1_b, mut s2_a, mut s2_b) = (zero, zero, zero, zero);
    let (mut c_a, mut c_b) = (zero, zero);
    for c in v.chunks_exact(4) {
        let a = _mm_set_pd(c[1], c[0]);
        let b = _mm_set_pd(c[3], c[2]);
        // MAXPD/MINPD return the second operand when the first is NaN.
        max_a = _mm_max_pd(a, max_a);
        max_b = _mm_max_pd(b, max_b);
        min_a = _mm_min_pd(a, min_a);
        min_b = _mm_min_pd(b, min_b);
        let ok_a = _mm_cmpord_pd(a, a);
        let ok_b = _mm_cmpord_pd(b, b);
        let d_a = _mm_and_pd(_mm_sub_pd(a, kk), ok_a);
        let d_b = _mm_and_pd(_mm_sub_pd(b, kk), ok_b);
        s1_a = _mm_add_pd(s1_a, d_a);
        s1_b = _mm_add_pd(s1_b, d_b);
        s2_a = _mm_add_pd(s2_a, _mm_mul_pd(d_a, d_a));
        s2_b = _mm_add_pd(s2_b, _mm_mul_pd(d_b, d_b));
        c_a = _mm_add_pd(c_a, _mm_and_pd(one, ok_a));
        c_b = _mm_add_pd(c_b, _mm_and_pd(one, ok_b));
    }
    let arr = |a: __m128d, b: __m128d| {
        let mut lo = [0.0; 2];
        let mut hi = [0.0; 2];
        _mm_storeu_pd_array(&mut lo, a);
        _mm_storeu_pd_array(&mut hi, b);
        [lo[0], lo[1], hi[0], hi[1]]
    };
    Lanes {
        max: arr(max_a, max_b),
        min: arr(min_a, min_b),
        s1: arr(s1_a, s1_b),
        s2: arr(s2_a, s2_b),
        cnt: arr(c_a, c_b),
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn _mm_storeu_pd_array(out: &mut [f64; 2], v: std::arch::x86_64::__m128d) {
    use std::arch::x86_64::*;
    out[0] = _mm_cvtsd_f64(v);
    out[1] = _mm_cvtsd_f64(_mm_unpackhi_pd(v, v));
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn lanes_entry(v: &[f64], k: f64) -> Lanes {
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { lanes_avx2(v, k) }
    } else {
        // SAFETY: `lanes` only needs SSE2, which this cfg guarantees is enabled for the
        // whole build (it is part of the x86-64 baseline).
        unsafe { lanes(v, k) }
    }
}

/// [`Lanes`] with AVX2: lane `l` of one 256-bit register holds what lane `l` of the SSE2
/// and portable versions holds, with the same operations, so results are bit-identical.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "avx2")]
fn lanes_avx2(v: &[f64], k: f64) -> Lanes {
    use std::arch::x86_64::*;
    let kk = _mm256_set1_pd(k);
    let one = _mm256_set1_pd(1.0);
    let (mut max, mut min) = (kk, kk);
    let (mut s1, mut s2, mut cnt) = (
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
        _mm256_setzero_pd(),
    );
    for c in v.chunks_exact(4) {
        let x = _mm256_set_pd(c[3], c[2], c[1], c[0]);
        max = _mm256_max_pd(x, max);
        min = _mm256_min_pd(x, min);
        let ok = _mm256_cmp_pd::<_CMP_ORD_Q>(x, x);
        let d = _mm256_and_pd(_mm256_sub_pd(x, kk), ok);
        s1 = _mm256_add_pd(s1, d);
        s2 = _mm256_add_pd(s2, _mm256_mul_pd(d, d));
        cnt = _mm256_add_pd(cnt, _mm256_and_pd(one, ok));
    }
    let arr = |x: __m256d| {
        let lo = _mm256_castpd256_pd128(x);
        let hi = _mm256_extractf128_pd::<1>(x);
        [
            _mm_cvtsd_f64(lo),
            _mm_cvtsd_f64(_mm_unpackhi_pd(lo, lo)),
            _mm_cvtsd_f64(hi),
            _mm_cvtsd_f64(_mm_unpackhi_pd(hi, hi)),
        ]
    };
    Lanes {
        max: arr(max),
        min: arr(min),
        s1: arr(s1),
        s2: arr(s2),
        cnt: arr(cnt),
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn lanes_entry(v: &[f64], k: f64) -> Lanes {
    lanes(v, k)
}

/// [`Lanes`], portable version.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn lanes(v: &[f64], k: f64) -> Lanes {
    let mut out = Lanes {
        max: [k; 4],
        min: [k; 4],
        s1: [0.0; 4],
        s2: [0.0; 4],
        cnt: [0.0; 4],
    };
    for c in v.chunks_exact(4) {
        for (l, &x) in c.iter().enumerate() {
            out.step(l, x, k);
        }
    }
    out
}

/// Index of the first element equal to `target`, testing blocks of eight without
/// branches so that the common path is a few vector compares per block.
#[inline]
fn first_equal(v: &[f64], target: f64) -> Option<usize> {
    let blocks = v.chunks_exact(8);
    let tail = blocks.remainder();
    for (b, c) in blocks.enumerate() {
        if c.iter().fold(false, |hit, &x| hit | (x == target)) {
            return c.iter().position(|&x| x == target).map(|p| b * 8 + p);
        }
    }
    tail.iter()
        .position(|&x| x == target)
        .map(|p| v.len() - tail.len() + p)
}

/// Max, min and mean of the valid probes, through the same lanes as the cells.
#[inline]
fn temp_stats(t: &[f64]) -> (f64, f64, f64) {
    let Some(&k) = t.iter().find(|x| !x.is_nan()) else {
        return (f64::NAN, f64::NAN, f64::NAN);
    };
    let m = moments(t, k);
    (m.max, m.min, k + m.mean_d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame<'a>(cells: &'a [f64], temps: &'a [f64], flags: Option<u32>) -> FrameRef<'a> {
        FrameRef {
            vin: "LTEST000000000001",
            timestamp_ms: 0,
            pack_voltage: cells.iter().sum(),
            pack_current: -12.5,
            soc: 55.0,
            cell_voltages: cells,
            temperatures: temps,
            alarm_flags: flags,
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn worked_example() {
        // Cells 3.75, 3.82, 3.75, 3.785 V: max 3.82 (idx 1), min 3.75 (first at idx 0).
        let cells = [3.75, 3.82, 3.75, 3.785];
        let temps = [25.0, 27.0, 24.0];
        let f = frame_features(&frame(&cells, &temps, None), &FeatureConfig::default());
        close(f.cell_v_max, 3.82);
        close(f.cell_v_min, 3.75);
        close(f.cell_v_spread, 0.07);
        close(f.cell_v_mean, 3.77625);
        // deviations -0.02625, 0.04375, -0.02625, 0.00875: squares sum to 0.00336875, / 4
        close(f.cell_v_std, 0.000_842_187_5f64.sqrt());
        assert_eq!(f.cell_v_max_idx, Some(1));
        assert_eq!(f.cell_v_min_idx, Some(0));
        close(f.temp_max, 27.0);
        close(f.temp_min, 24.0);
        close(f.temp_delta, 3.0);
        close(f.temp_mean, 76.0 / 3.0);
        // NMC: 3.75 V = 50 %, 3.82 V = 60 %, 3.785 V = 55 % → per-cell SOC 50, 60, 50, 55.
        close(f.soc_deviation, 10.0);
        close(f.soc_bias, 55.0 - 53.75);
        assert!(!f.consistency_alarm, "spread 0.07 ≤ 0.10");
    }

    #[test]
    fn nan_cells_and_probes_are_excluded() {
        let cells = [f64::NAN, 3.70, f64::NAN, 3.75];
        let temps = [f64::NAN, 20.0];
        let f = frame_features(&frame(&cells, &temps, None), &FeatureConfig::default());
        close(f.cell_v_max, 3.75);
        close(f.cell_v_min, 3.70);
        assert_eq!(f.cell_v_max_idx, Some(3));
        assert_eq!(f.cell_v_min_idx, Some(1));
        close(f.cell_v_mean, 3.725);
        close(f.cell_v_std, 0.025);
        close(f.temp_delta, 0.0);
        close(f.temp_mean, 20.0);
        close(f.soc_deviation, 10.0); // 40 % → 50 %
    }

    #[test]
    fn all_nan_frame_gives_nan_and_no_alarm() {
        let cells = [f64::NAN; 3];
        let temps = [f64::NAN];
        let f = frame_features(&frame(&cells, &temps, None), &FeatureConfig::default());
        for x in f.floats() {
            assert!(x.is_nan());
        }
        assert_eq!(f.cell_v_max_idx, None);
        assert!(!f.consistency_alarm);
    }

    #[test]
    fn one_cell_one_probe() {
        let f = frame_features(&frame(&[3.7], &[31.0], None), &FeatureConfig::default());
        close(f.cell_v_spread, 0.0);
        close(f.cell_v_std, 0.0);
        close(f.temp_delta, 0.0);
        close(f.soc_deviation, 0.0);
        close(f.soc_bias, 55.0 - 40.0);
        assert_eq!((f.cell_v_max_idx, f.cell_v_min_idx), (Some(0), Some(0)));
    }

    #[test]
    fn alarm_from_flags_overrides_the_rule() {
        let wide = [3.6, 3.8]; // spread 0.2 > 0.1
        let narrow = [3.7, 3.71];
        let cfg = FeatureConfig::default();
        assert!(frame_features(&frame(&wide, &[20.0], None), &cfg).consistency_alarm);
        // Flags present without bit 10: no alarm even though the spread is wide.
        assert!(!frame_features(&frame(&wide, &[20.0], Some(0x3FF)), &cfg).consistency_alarm);
        // Bit 10 set: alarm even though the spread is narrow.
        assert!(frame_features(&frame(&narrow, &[20.0], Some(0x400)), &cfg).consistency_alarm);
        // Threshold configurable and strict.
        let cfg = FeatureConfig::new(OcvCurve::nmc(), 0.2).unwrap();
        assert!(!frame_features(&frame(&wide, &[20.0], None), &cfg).consistency_alarm);
        assert!(FeatureConfig::new(OcvCurve::nmc(), f64::NAN).is_err());
        assert!(FeatureConfig::new(OcvCurve::nmc(), -0.1).is_err());
    }

    /// Straight from the definitions: two passes, one OCV lookup per cell.
    fn naive(cells: &[f64], temps: &[f64], soc: f64, ocv: &OcvCurve) -> [f64; 9] {
        let vc: Vec<f64> = cells.iter().copied().filter(|x| !x.is_nan()).collect();
        let vt: Vec<f64> = temps.iter().copied().filter(|x| !x.is_nan()).collect();
        let n = vc.len() as f64;
        let mean = vc.iter().sum::<f64>() / n;
        let var = vc.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let socs: Vec<f64> = vc.iter().map(|&v| ocv.soc_at(v)).collect();
        let smax = socs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let smin = socs.iter().cloned().fold(f64::INFINITY, f64::min);
        [
            vc.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            vc.iter().cloned().fold(f64::INFINITY, f64::min),
            mean,
            var.sqrt(),
            vt.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            vt.iter().cloned().fold(f64::INFINITY, f64::min),
            vt.iter().sum::<f64>() / vt.len() as f64,
            smax - smin,
            soc - socs.iter().sum::<f64>() / n,
        ]
    }

    proptest::proptest! {
        #[test]
        fn equals_the_definitions(
            base in 2.9f64..4.3,
            spread in proptest::prop_oneof![0.0f64..0.03, 0.0f64..0.6],
            noise in proptest::collection::vec(0.0f64..1.0, 1..100),
            nan_at in proptest::collection::vec(0usize..100, 0..4),
            temps in proptest::collection::vec(-30.0f64..60.0, 1..40),
            lfp in proptest::bool::ANY,
        ) {
            let mut cells: Vec<f64> = noise
                .iter()
                .map(|u| ((base + spread * (u - 0.5)) * 1000.0).round() / 1000.0)
                .collect();
            for &i in &nan_at {
                if i < cells.len() && cells.iter().filter(|x| !x.is_nan()).count() > 1 {
                    cells[i] = f64::NAN;
                }
            }
            let cfg = FeatureConfig::for_chemistry(if lfp { Chemistry::Lfp } else { Chemistry::Nmc });
            let f = frame_features(&frame(&cells, &temps, None), &cfg);
            let want = naive(&cells, &temps, 55.0, &cfg.ocv);
            let got = [
                f.cell_v_max, f.cell_v_min, f.cell_v_mean, f.cell_v_std, f.temp_max, f.temp_min,
                f.temp_mean, f.soc_deviation, f.soc_bias,
            ];
            for (k, (g, w)) in got.iter().zip(want).enumerate() {
                proptest::prop_assert!((g - w).abs() < 1e-9, "feature {}: {} vs {}", k, g, w);
            }
            let first = |x: f64| cells.iter().position(|&c| c == x);
            proptest::prop_assert_eq!(f.cell_v_max_idx, first(want[0]));
            proptest::prop_assert_eq!(f.cell_v_min_idx, first(want[1]));
        }
    }

    #[test]
    fn nan_soc_gives_nan_bias_only() {
        let mut fr = frame(&[3.7, 3.75], &[20.0], None);
        fr.soc = f64::NAN;
        let f = frame_features(&fr, &FeatureConfig::default());
        assert!(f.soc_bias.is_nan());
        close(f.soc_deviation, 10.0);
    }
}
