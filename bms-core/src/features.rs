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

#[inline]
fn cell_stats(v: &[f64], ocv: &OcvCurve) -> CellStats {
    let mut max = f64::NEG_INFINITY;
    let mut min = f64::INFINITY;
    let mut max_idx = usize::MAX;
    let mut min_idx = usize::MAX;
    let mut sum = 0.0;
    let mut soc_sum = 0.0;
    let mut n = 0usize;
    for (i, &x) in v.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        if x > max {
            max = x;
            max_idx = i;
        }
        if x < min {
            min = x;
            min_idx = i;
        }
        sum += x;
        soc_sum += ocv.soc_at(x);
        n += 1;
    }
    if n == 0 {
        return CellStats {
            max: f64::NAN,
            min: f64::NAN,
            mean: f64::NAN,
            std: f64::NAN,
            max_idx: None,
            min_idx: None,
            soc_mean: f64::NAN,
        };
    }
    let mean = sum / n as f64;
    let mut ss = 0.0;
    for &x in v {
        if !x.is_nan() {
            let d = x - mean;
            ss += d * d;
        }
    }
    CellStats {
        max,
        min,
        mean,
        std: (ss / n as f64).sqrt(),
        max_idx: Some(max_idx),
        min_idx: Some(min_idx),
        soc_mean: soc_sum / n as f64,
    }
}

#[inline]
fn temp_stats(t: &[f64]) -> (f64, f64, f64) {
    let mut max = f64::NEG_INFINITY;
    let mut min = f64::INFINITY;
    let mut sum = 0.0;
    let mut n = 0usize;
    for &x in t {
        if x.is_nan() {
            continue;
        }
        max = max.max(x);
        min = min.min(x);
        sum += x;
        n += 1;
    }
    if n == 0 {
        (f64::NAN, f64::NAN, f64::NAN)
    } else {
        (max, min, sum / n as f64)
    }
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
        for x in [
            f.cell_v_max,
            f.cell_v_min,
            f.cell_v_spread,
            f.cell_v_mean,
            f.cell_v_std,
            f.temp_max,
            f.temp_min,
            f.temp_delta,
            f.temp_mean,
            f.soc_deviation,
            f.soc_bias,
        ] {
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

    #[test]
    fn nan_soc_gives_nan_bias_only() {
        let mut fr = frame(&[3.7, 3.75], &[20.0], None);
        fr.soc = f64::NAN;
        let f = frame_features(&fr, &FeatureConfig::default());
        assert!(f.soc_bias.is_nan());
        close(f.soc_deviation, 10.0);
    }
}
