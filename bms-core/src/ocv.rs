//! Open-circuit-voltage curves: cell voltage → cell SOC (SPEC §3).
//!
//! A curve is a table of (soc %, volts) points, both strictly increasing, interpolated
//! piecewise-linearly. Voltages below the first point read as the first point's SOC,
//! above the last point as the last point's SOC; the result is clamped to 0–100 %.
//!
//! Inversion is on the hot path (every cell of every frame), so [`OcvCurve`] compiles the
//! table into a uniform voltage grid: each grid bin knows the first segment that can hold
//! a voltage in that bin, and a voltage needs one multiply, one table read and at most a
//! few comparisons instead of a binary search. The answer is the exact piecewise-linear
//! interpolation either way.
//!
//! **LFP caveat.** LFP's OCV curve is nearly flat between ~20 % and ~90 % SOC (a few mV per
//! 10 %), so one millivolt of sensor quantisation moves the inferred SOC by several
//! percentage points: `soc_deviation` and `soc_bias` are ill-conditioned for LFP packs and
//! should be read as coarse indicators only.

use serde::{Deserialize, Serialize};

use crate::error::{BmsError, Result};

const GRID_BINS: usize = 512;

/// Chemistries with a shipped default curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Chemistry {
    #[default]
    Nmc,
    Lfp,
}

impl std::str::FromStr for Chemistry {
    type Err = BmsError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "nmc" => Ok(Chemistry::Nmc),
            "lfp" => Ok(Chemistry::Lfp),
            _ => Err(BmsError::invalid(
                "chemistry",
                format!("'{s}' (expected 'nmc' or 'lfp')"),
            )),
        }
    }
}

/// Default NMC curve (soc %, volts): a typical NMC-graphite cell at rest, 25 °C.
pub const NMC_POINTS: &[(f64, f64)] = &[
    (0.0, 3.00),
    (5.0, 3.45),
    (10.0, 3.55),
    (20.0, 3.62),
    (30.0, 3.66),
    (40.0, 3.70),
    (50.0, 3.75),
    (60.0, 3.82),
    (70.0, 3.90),
    (80.0, 3.98),
    (90.0, 4.08),
    (100.0, 4.20),
];

/// Default LFP curve (soc %, volts): note the plateau between 20 % and 90 %.
pub const LFP_POINTS: &[(f64, f64)] = &[
    (0.0, 2.80),
    (5.0, 3.10),
    (10.0, 3.20),
    (20.0, 3.25),
    (30.0, 3.275),
    (40.0, 3.285),
    (50.0, 3.29),
    (60.0, 3.295),
    (70.0, 3.30),
    (80.0, 3.31),
    (90.0, 3.33),
    (100.0, 3.50),
];

/// A validated OCV curve compiled for fast inversion.
#[derive(Debug, Clone, PartialEq)]
pub struct OcvCurve {
    soc: Vec<f64>,
    volts: Vec<f64>,
    /// d(soc)/d(volts) of segment k (between points k and k+1).
    slope: Vec<f64>,
    v_lo: f64,
    v_hi: f64,
    inv_bin: f64,
    /// For each grid bin, the segment holding the bin's lower edge.
    bin_segment: Vec<u16>,
    /// For each grid bin, that segment's interpolation and the voltage above which the bin
    /// leaves it (+∞ when the whole bin lies in the segment).
    lut: Box<[Bin; GRID_BINS + 1]>,
    /// Per linear piece (see `piece`): true when SOC on it stays within 0–100 %.
    piece_in_range: Vec<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bin {
    v0: f64,
    s0: f64,
    slope: f64,
    upper: f64,
}

impl OcvCurve {
    /// Builds a curve from (soc %, volts) points: at least two, both coordinates finite and
    /// strictly increasing.
    pub fn new(points: &[(f64, f64)]) -> Result<Self> {
        let bad = |reason: String| Err(BmsError::invalid("OCV table", reason));
        if points.len() < 2 {
            return bad(format!(
                "needs at least two (soc, volts) points, got {}",
                points.len()
            ));
        }
        if points.len() > u16::MAX as usize {
            return bad(format!("too many points ({})", points.len()));
        }
        for (i, &(s, v)) in points.iter().enumerate() {
            if !s.is_finite() || !v.is_finite() {
                return bad(format!("point {} ({s}, {v}) is not finite", i + 1));
            }
            if i > 0 {
                let (ps, pv) = points[i - 1];
                if s <= ps {
                    return bad(format!(
                        "soc must be strictly increasing: point {} has soc {s} after {ps}",
                        i + 1
                    ));
                }
                if v <= pv {
                    return bad(format!(
                        "volts must be strictly increasing: point {} has {v} V after {pv} V",
                        i + 1
                    ));
                }
            }
        }
        let soc: Vec<f64> = points.iter().map(|p| p.0).collect();
        let volts: Vec<f64> = points.iter().map(|p| p.1).collect();
        let slope: Vec<f64> = (0..points.len() - 1)
            .map(|k| (soc[k + 1] - soc[k]) / (volts[k + 1] - volts[k]))
            .collect();
        let v_lo = volts[0];
        let v_hi = volts[volts.len() - 1];
        let inv_bin = GRID_BINS as f64 / (v_hi - v_lo);
        let mut bin_segment = Vec::with_capacity(GRID_BINS + 1);
        let mut seg = 0usize;
        for b in 0..=GRID_BINS {
            let edge = v_lo + b as f64 / inv_bin;
            while seg + 2 < volts.len() && volts[seg + 1] <= edge {
                seg += 1;
            }
            bin_segment.push(seg as u16);
        }
        let lut = (0..=GRID_BINS)
            .map(|b| {
                let seg = bin_segment[b] as usize;
                let next_edge = v_lo + (b + 1) as f64 / inv_bin;
                Bin {
                    v0: volts[seg],
                    s0: soc[seg],
                    slope: slope[seg],
                    upper: if volts[seg + 1] < next_edge && seg + 2 < volts.len() {
                        volts[seg + 1]
                    } else {
                        f64::INFINITY
                    },
                }
            })
            .collect::<Vec<Bin>>()
            .into_boxed_slice()
            .try_into()
            .expect("GRID_BINS + 1 bins");
        let inside = |x: f64| (0.0..=100.0).contains(&x);
        let mut piece_in_range = vec![true];
        piece_in_range.extend((0..soc.len() - 1).map(|k| inside(soc[k]) && inside(soc[k + 1])));
        piece_in_range.push(true);
        Ok(OcvCurve {
            piece_in_range,
            soc,
            volts,
            slope,
            v_lo,
            v_hi,
            inv_bin,
            bin_segment,
            lut,
        })
    }

    pub fn for_chemistry(chemistry: Chemistry) -> Self {
        let points = match chemistry {
            Chemistry::Nmc => NMC_POINTS,
            Chemistry::Lfp => LFP_POINTS,
        };
        OcvCurve::new(points).expect("shipped OCV tables are valid")
    }

    pub fn nmc() -> Self {
        Self::for_chemistry(Chemistry::Nmc)
    }

    pub fn lfp() -> Self {
        Self::for_chemistry(Chemistry::Lfp)
    }

    /// Reads a curve from CSV text: a header line `soc,volts` (any names) then one point per
    /// line.
    pub fn from_csv_str(text: &str) -> Result<Self> {
        let mut points = Vec::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let mut it = line.split(',');
            let (Some(s), Some(v), None) = (it.next(), it.next(), it.next()) else {
                return Err(BmsError::invalid(
                    "OCV table",
                    format!("line {}: expected 'soc,volts', found '{line}'", i + 1),
                ));
            };
            let num = |x: &str| {
                x.trim().parse::<f64>().map_err(|_| {
                    BmsError::invalid(
                        "OCV table",
                        format!("line {}: '{}' is not a number", i + 1, x.trim()),
                    )
                })
            };
            points.push((num(s)?, num(v)?));
        }
        Self::new(&points)
    }

    /// The table's points as (soc %, volts).
    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.soc.iter().copied().zip(self.volts.iter().copied())
    }

    /// Cell SOC (%) at `volts`; NaN for NaN.
    #[inline]
    pub fn soc_at(&self, volts: f64) -> f64 {
        if volts.is_nan() {
            return f64::NAN;
        }
        let soc = if volts <= self.v_lo {
            self.soc[0]
        } else if volts >= self.v_hi {
            self.soc[self.soc.len() - 1]
        } else {
            let bin = ((volts - self.v_lo) * self.inv_bin) as usize;
            let mut seg = self.bin_segment[bin.min(GRID_BINS)] as usize;
            while volts > self.volts[seg + 1] {
                seg += 1;
            }
            self.soc[seg] + (volts - self.volts[seg]) * self.slope[seg]
        };
        soc.clamp(0.0, 100.0)
    }

    /// [`OcvCurve::soc_at`] for a voltage known not to be NaN, with the same result, built
    /// for the per-cell hot loop: one table read and one compare on the common path.
    #[inline(always)]
    pub(crate) fn soc_at_valid(&self, volts: f64) -> f64 {
        let x = (volts - self.v_lo) * self.inv_bin;
        if x > 0.0 && x < GRID_BINS as f64 {
            let e = &self.lut[(x as usize).min(GRID_BINS)];
            if volts <= e.upper {
                return (e.s0 + (volts - e.v0) * e.slope).clamp(0.0, 100.0);
            }
        }
        self.soc_at_cold(volts)
    }

    #[cold]
    #[inline(never)]
    fn soc_at_cold(&self, volts: f64) -> f64 {
        self.soc_at(volts)
    }

    /// The linear piece holding `volts` (not NaN): 0 below the table, `k + 1` inside
    /// segment `k`, `points` above the table.
    #[inline]
    fn piece(&self, volts: f64) -> usize {
        if volts <= self.v_lo {
            return 0;
        }
        if volts >= self.v_hi {
            return self.soc.len();
        }
        let bin = (((volts - self.v_lo) * self.inv_bin) as usize).min(GRID_BINS);
        let mut seg = self.bin_segment[bin] as usize;
        while volts > self.volts[seg + 1] {
            seg += 1;
        }
        seg + 1
    }

    /// SOC on linear piece `p` (see `piece`) at `volts`, unclamped: the piece's linear
    /// function (constant on the two outer pieces).
    #[inline]
    fn piece_value(&self, p: usize, volts: f64) -> f64 {
        let n = self.soc.len();
        if p == 0 {
            self.soc[0]
        } else if p == n {
            self.soc[n - 1]
        } else {
            self.soc[p - 1] + (volts - self.volts[p - 1]) * self.slope[p - 1]
        }
    }

    /// Mean per-cell SOC of `cells` (NaN skipped), given the valid extremes `min`, `max`,
    /// the mean voltage and the number of valid cells.
    ///
    /// When both extremes lie on one linear piece of the curve (and the piece's SOC stays
    /// inside 0–100 %, so clamping is the identity), every valid cell does too, and the mean
    /// of a linear function is the function of the mean: one evaluation instead of one per
    /// cell. When they lie on two adjacent pieces, the same holds for each side of the
    /// breakpoint. Otherwise each cell is looked up.
    #[inline]
    pub(crate) fn mean_soc(&self, cells: &[f64], min: f64, max: f64, mean: f64, n: f64) -> f64 {
        let p = self.piece(min);
        let q = self.piece(max);
        if p == q && self.piece_in_range[p] {
            return self.soc_at_valid(mean.clamp(min, max));
        }
        if q == p + 1 && self.piece_in_range[p] && self.piece_in_range[q] {
            // One breakpoint inside [min, max]: cells at or below it are on piece p, the
            // rest on piece q; each side's mean is linear in its voltage sum.
            let (n_lo, sum_lo, sum_hi) = split_sums(cells, self.volts[p]);
            let n_hi = n - n_lo;
            let side = |piece: usize, count: f64, sum: f64| {
                if count == 0.0 {
                    0.0
                } else {
                    count * self.piece_value(piece, sum / count)
                }
            };
            return (side(p, n_lo, sum_lo) + side(q, n_hi, sum_hi)) / n;
        }
        let mut acc = [0.0; 2];
        let pairs = cells.chunks_exact(2);
        let odd = pairs.remainder();
        for c in pairs {
            if !c[0].is_nan() {
                acc[0] += self.soc_at_valid(c[0]);
            }
            if !c[1].is_nan() {
                acc[1] += self.soc_at_valid(c[1]);
            }
        }
        if let Some(&x) = odd.first().filter(|x| !x.is_nan()) {
            acc[0] += self.soc_at_valid(x);
        }
        (acc[0] + acc[1]) / n
    }

    /// Cell open-circuit voltage at `soc` % (the forward curve; used by the simulator).
    pub fn volts_at(&self, soc: f64) -> f64 {
        if soc.is_nan() {
            return f64::NAN;
        }
        let n = self.soc.len();
        if soc <= self.soc[0] {
            return self.volts[0];
        }
        if soc >= self.soc[n - 1] {
            return self.volts[n - 1];
        }
        let k = self.soc.partition_point(|&s| s <= soc) - 1;
        self.volts[k] + (soc - self.soc[k]) / self.slope[k]
    }
}

/// Per-lane running sums of [`split_sums`]: lane `l` holds the cells whose index is `l`
/// mod 4. A NaN fails both comparisons and adds nothing.
#[derive(Default)]
struct SplitLanes {
    n_lo: [f64; 4],
    sum_lo: [f64; 4],
    sum_hi: [f64; 4],
}

impl SplitLanes {
    /// Adds `x` to lane `l`; the SSE2 version does exactly this per lane.
    #[inline]
    fn step(&mut self, l: usize, x: f64, bp: f64) {
        let lo = x <= bp;
        let hi = x > bp;
        self.n_lo[l] += if lo { 1.0 } else { 0.0 };
        self.sum_lo[l] += if lo { x } else { 0.0 };
        self.sum_hi[l] += if hi { x } else { 0.0 };
    }

    fn finish(&self) -> (f64, f64, f64) {
        let add = |a: &[f64; 4]| (a[0] + a[1]) + (a[2] + a[3]);
        (add(&self.n_lo), add(&self.sum_lo), add(&self.sum_hi))
    }
}

/// Count and sum of the valid cells at or below the breakpoint `bp`, and the sum of those
/// above it, in four lanes (identical results on every architecture).
#[inline]
fn split_sums(cells: &[f64], bp: f64) -> (f64, f64, f64) {
    let mut lanes = split_lanes(cells, bp);
    for (l, &x) in cells.chunks_exact(4).remainder().iter().enumerate() {
        lanes.step(l, x, bp);
    }
    lanes.finish()
}

/// [`SplitLanes`] over the whole groups of four, with SSE2 (baseline on x86-64): lanes 0–1
/// in one register and 2–3 in another, the same operations as [`SplitLanes::step`].
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn split_lanes(cells: &[f64], bp: f64) -> SplitLanes {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is enabled for the whole build (this cfg), and every load reads inside
    // a chunk of four.
    unsafe {
        let b = _mm_set1_pd(bp);
        let one = _mm_set1_pd(1.0);
        let zero = _mm_setzero_pd();
        let (mut n_a, mut n_b, mut lo_a, mut lo_b, mut hi_a, mut hi_b) =
            (zero, zero, zero, zero, zero, zero);
        for c in cells.chunks_exact(4) {
            let xa = _mm_loadu_pd(c.as_ptr());
            let xb = _mm_loadu_pd(c.as_ptr().add(2));
            // CMPLEPD/CMPLTPD are ordered: false on NaN, like the scalar comparisons.
            let le_a = _mm_cmple_pd(xa, b);
            let le_b = _mm_cmple_pd(xb, b);
            let gt_a = _mm_cmplt_pd(b, xa);
            let gt_b = _mm_cmplt_pd(b, xb);
            n_a = _mm_add_pd(n_a, _mm_and_pd(one, le_a));
            n_b = _mm_add_pd(n_b, _mm_and_pd(one, le_b));
            lo_a = _mm_add_pd(lo_a, _mm_and_pd(xa, le_a));
            lo_b = _mm_add_pd(lo_b, _mm_and_pd(xb, le_b));
            hi_a = _mm_add_pd(hi_a, _mm_and_pd(xa, gt_a));
            hi_b = _mm_add_pd(hi_b, _mm_and_pd(xb, gt_b));
        }
        let arr = |a: __m128d, b: __m128d| {
            let mut out = [0.0; 4];
            _mm_storeu_pd(out.as_mut_ptr(), a);
            _mm_storeu_pd(out.as_mut_ptr().add(2), b);
            out
        };
        SplitLanes {
            n_lo: arr(n_a, n_b),
            sum_lo: arr(lo_a, lo_b),
            sum_hi: arr(hi_a, hi_b),
        }
    }
}

/// [`SplitLanes`] over the whole groups of four, portable version.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn split_lanes(cells: &[f64], bp: f64) -> SplitLanes {
    let mut lanes = SplitLanes::default();
    for c in cells.chunks_exact(4) {
        for (l, &x) in c.iter().enumerate() {
            lanes.step(l, x, bp);
        }
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_sums_equal_the_per_lane_definition_bit_for_bit() {
        // Cells around a breakpoint, with NaNs and values equal to it, for every length
        // class mod 4; the vector path must match SplitLanes::step applied cell by cell.
        let bp = 3.7;
        for n in 0..40usize {
            let cells: Vec<f64> = (0..n)
                .map(|i| match (i * 7 + n) % 9 {
                    0 => f64::NAN,
                    1 => bp,
                    k => bp + (k as f64 - 4.5) * 0.0137 + i as f64 * 1e-4,
                })
                .collect();
            let mut reference = SplitLanes::default();
            for (i, &x) in cells.iter().enumerate() {
                reference.step(i % 4, x, bp);
            }
            let (a, b) = (split_sums(&cells, bp), reference.finish());
            assert_eq!(
                [a.0.to_bits(), a.1.to_bits(), a.2.to_bits()],
                [b.0.to_bits(), b.1.to_bits(), b.2.to_bits()],
                "n = {n}"
            );
            let valid: Vec<f64> = cells.iter().copied().filter(|x| !x.is_nan()).collect();
            assert_eq!(a.0, valid.iter().filter(|&&x| x <= bp).count() as f64);
            let lo: f64 = valid.iter().filter(|&&x| x <= bp).sum();
            let hi: f64 = valid.iter().filter(|&&x| x > bp).sum();
            assert!(
                (a.1 - lo).abs() < 1e-12 && (a.2 - hi).abs() < 1e-12,
                "n = {n}"
            );
        }
    }

    fn naive_soc(points: &[(f64, f64)], v: f64) -> f64 {
        let n = points.len();
        if v <= points[0].1 {
            return points[0].0.clamp(0.0, 100.0);
        }
        if v >= points[n - 1].1 {
            return points[n - 1].0.clamp(0.0, 100.0);
        }
        for w in points.windows(2) {
            if v <= w[1].1 {
                let t = (v - w[0].1) / (w[1].1 - w[0].1);
                return (w[0].0 + t * (w[1].0 - w[0].0)).clamp(0.0, 100.0);
            }
        }
        unreachable!()
    }

    #[test]
    fn worked_values_nmc() {
        let c = OcvCurve::nmc();
        // On a breakpoint.
        assert!((c.soc_at(3.75) - 50.0).abs() < 1e-9);
        // Halfway between (50 %, 3.75 V) and (60 %, 3.82 V).
        assert!((c.soc_at(3.785) - 55.0).abs() < 1e-9);
        // Outside the table: clamped to the ends.
        assert_eq!(c.soc_at(2.5), 0.0);
        assert_eq!(c.soc_at(4.5), 100.0);
        assert!(c.soc_at(f64::NAN).is_nan());
    }

    #[test]
    fn grid_inversion_equals_linear_scan() {
        for points in [NMC_POINTS, LFP_POINTS] {
            let c = OcvCurve::new(points).unwrap();
            let lo = points[0].1 - 0.1;
            let hi = points[points.len() - 1].1 + 0.1;
            for i in 0..=100_000 {
                let v = lo + (hi - lo) * i as f64 / 100_000.0;
                let a = c.soc_at(v);
                let b = naive_soc(points, v);
                assert!((a - b).abs() < 1e-9, "v={v}: grid {a} vs scan {b}");
                assert_eq!(a.to_bits(), c.soc_at_valid(v).to_bits(), "v={v}");
            }
            for &(s, v) in points {
                assert!((c.soc_at(v) - s).abs() < 1e-9);
                assert!((c.volts_at(s) - v).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn user_tables_are_validated() {
        let e = OcvCurve::new(&[(0.0, 3.0)]).unwrap_err().to_string();
        assert!(e.contains("at least two"), "{e}");
        let e = OcvCurve::new(&[(0.0, 3.0), (50.0, 3.0)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("volts must be strictly increasing") && e.contains("point 2"),
            "{e}"
        );
        let e = OcvCurve::new(&[(10.0, 3.0), (5.0, 3.5)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("soc must be strictly increasing"), "{e}");
        let e = OcvCurve::new(&[(0.0, 3.0), (100.0, f64::NAN)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not finite"), "{e}");
        // A user table outside 0–100 % is accepted; results are clamped.
        let c = OcvCurve::new(&[(-10.0, 3.0), (110.0, 4.2)]).unwrap();
        assert_eq!(c.soc_at(3.0), 0.0);
        assert_eq!(c.soc_at(4.2), 100.0);
        assert!((c.soc_at(3.6) - 50.0).abs() < 1e-9);
        // Breakpoints closer together than a grid bin take the exact slow path.
        let pts = [
            (0.0, 3.0),
            (10.0, 3.0001),
            (20.0, 3.0002),
            (30.0, 3.0003),
            (100.0, 4.0),
        ];
        let c = OcvCurve::new(&pts).unwrap();
        for i in 0..=4000 {
            let v = 2.99 + i as f64 * 0.00001;
            assert!(
                (c.soc_at_valid(v) - naive_soc(&pts, v)).abs() < 1e-9,
                "v={v}"
            );
        }
    }

    #[test]
    fn csv_tables() {
        let c = OcvCurve::from_csv_str("soc,volts\n0,3.0\n100,4.0\n").unwrap();
        assert!((c.soc_at(3.25) - 25.0).abs() < 1e-9);
        let e = OcvCurve::from_csv_str("soc,volts\n0,3.0\n100,x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("'x'"), "{e}");
    }
}
