//! Windows and labels (SPEC §5).
//!
//! Per vehicle, rows are sorted by date and made dense (missing calendar days become
//! all-NaN rows). For each position `i ≥ context`, the window holds rows `i−context … i−1`
//! day-major (oldest day first, each day's features in `spec.features` order), NaN replaced
//! by `spec.fill`; its label is 1.0 when any row in `i … i+horizon−1` that exists has label
//! 1.0; its date is the date of row `i`.

use std::collections::HashMap;

use chrono::NaiveDate;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::daily::{
    DailyColumn, DailyRow, DailyTable, REFERENCE_COLUMNS, date_of_day, day_of_date,
};
use crate::error::{BmsError, Result};

/// What a window is made of. The same contract a model carries in its metadata (SPEC §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Days of history per window (C).
    pub context: usize,
    /// Days ahead the label looks (H).
    pub horizon: usize,
    /// Daily columns per day, in order (F).
    pub features: Vec<DailyColumn>,
    /// Replaces NaN feature values.
    pub fill: f64,
    /// Emit only windows whose whole horizon lies inside the data.
    pub full_horizon: bool,
}

impl Default for WindowSpec {
    fn default() -> Self {
        WindowSpec {
            context: 14,
            horizon: 14,
            features: REFERENCE_COLUMNS.to_vec(),
            fill: -1.0,
            full_horizon: false,
        }
    }
}

impl WindowSpec {
    /// Values per window: `context × features.len()`.
    pub fn width(&self) -> usize {
        self.context * self.features.len()
    }

    pub fn validate(&self) -> Result<()> {
        if self.context == 0 {
            return Err(BmsError::invalid(
                "window spec",
                "context must be at least 1 day",
            ));
        }
        if self.horizon == 0 {
            return Err(BmsError::invalid(
                "window spec",
                "horizon must be at least 1 day",
            ));
        }
        if self.features.is_empty() {
            return Err(BmsError::invalid(
                "window spec",
                "the feature list is empty",
            ));
        }
        if self.context > 100_000 || self.horizon > 100_000 {
            return Err(BmsError::invalid(
                "window spec",
                format!(
                    "context {} / horizon {} days is beyond any plausible history",
                    self.context, self.horizon
                ),
            ));
        }
        Ok(())
    }
}

/// The vehicle and date a window predicts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub vin: String,
    pub date: NaiveDate,
}

/// Windows ready for a model: `x` is `[n, spec.width()]`, `y` the labels, `keys` the
/// (vin, date) of each row.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowBatch {
    pub x: Array2<f32>,
    pub y: Array1<f32>,
    pub keys: Vec<WindowKey>,
}

impl WindowBatch {
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One vehicle's rows, dense and ready to cut: `features` is `[days × F]` already filled
/// and in f32, `alarm` is 1 where the label is 1.0.
struct DenseVehicle<'a> {
    vin: &'a str,
    first_day: i64,
    features: Vec<f32>,
    alarm_prefix: Vec<u32>,
}

impl DenseVehicle<'_> {
    fn days(&self) -> usize {
        self.alarm_prefix.len() - 1
    }
}

fn positions(days: usize, spec: &WindowSpec) -> std::ops::Range<usize> {
    let end = if spec.full_horizon {
        (days + 1).saturating_sub(spec.horizon)
    } else {
        days
    };
    spec.context..end.max(spec.context)
}

fn densify<'a>(
    vin: &'a str,
    rows: &mut [&DailyRow],
    spec: &WindowSpec,
) -> Result<DenseVehicle<'a>> {
    rows.sort_by_key(|r| r.date);
    for w in rows.windows(2) {
        if w[0].date == w[1].date {
            return Err(BmsError::DuplicateDay {
                file: None,
                vin: vin.to_owned(),
                date: w[0].date.to_string(),
                first_line: 0,
                second_line: 0,
            });
        }
    }
    let first_day = day_of_date(rows[0].date);
    let last_day = day_of_date(rows[rows.len() - 1].date);
    let days = (last_day - first_day + 1) as usize;
    let nf = spec.features.len();
    let fill = spec.fill as f32;
    let mut features = vec![fill; days * nf];
    let mut alarm = vec![0u32; days];
    for r in rows.iter() {
        let d = (day_of_date(r.date) - first_day) as usize;
        let out = &mut features[d * nf..(d + 1) * nf];
        for (o, &c) in out.iter_mut().zip(&spec.features) {
            let v = r.get(c);
            if !v.is_nan() {
                *o = v as f32;
            }
        }
        alarm[d] = u32::from(r.label == 1.0);
    }
    let mut alarm_prefix = Vec::with_capacity(days + 1);
    alarm_prefix.push(0u32);
    let mut acc = 0;
    for a in alarm {
        acc += a;
        alarm_prefix.push(acc);
    }
    Ok(DenseVehicle {
        vin,
        first_day,
        features,
        alarm_prefix,
    })
}

/// Windows of a whole table. Vehicles appear in order of their first row in the table (as
/// the reference notebook's `df.VIN.unique()` loop does), windows of a vehicle in date
/// order. A vehicle with no more than `context` days yields no window. Two rows with the
/// same (VIN, Date) are an error naming both rows (1-based positions in the table).
pub fn windows(table: &DailyTable, spec: &WindowSpec) -> Result<WindowBatch> {
    spec.validate()?;
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in table.rows.iter().enumerate() {
        groups
            .entry(r.vin.as_str())
            .or_insert_with(|| {
                order.push(r.vin.as_str());
                Vec::new()
            })
            .push(i);
    }
    let mut dense = Vec::with_capacity(order.len());
    for vin in &order {
        let idx = &groups[vin];
        let mut rows: Vec<&DailyRow> = idx.iter().map(|&i| &table.rows[i]).collect();
        let v = densify(vin, &mut rows, spec).map_err(|e| match e {
            BmsError::DuplicateDay { vin, date, .. } => {
                let mut hits = idx
                    .iter()
                    .filter(|&&i| table.rows[i].date.to_string() == date)
                    .map(|&i| i as u64 + 1);
                let first_line = hits.next().unwrap_or(0);
                let second_line = hits.next().unwrap_or(0);
                BmsError::DuplicateDay {
                    file: None,
                    vin,
                    date,
                    first_line,
                    second_line,
                }
            }
            other => other,
        })?;
        dense.push(v);
    }
    Ok(cut(&dense, spec))
}

/// Windows of one vehicle's rows (any order; must all carry the same VIN).
pub fn vehicle_windows(rows: &[DailyRow], spec: &WindowSpec) -> Result<WindowBatch> {
    spec.validate()?;
    let Some(first) = rows.first() else {
        return Ok(cut(&[], spec));
    };
    if let Some(other) = rows.iter().find(|r| r.vin != first.vin) {
        return Err(BmsError::invalid(
            "vehicle rows",
            format!("rows of VIN {} mixed with VIN {}", first.vin, other.vin),
        ));
    }
    windows(
        &DailyTable {
            rows: rows.to_vec(),
        },
        spec,
    )
}

fn cut(vehicles: &[DenseVehicle<'_>], spec: &WindowSpec) -> WindowBatch {
    let width = spec.width();
    let nf = spec.features.len();
    let n: usize = vehicles
        .iter()
        .map(|v| positions(v.days(), spec).len())
        .sum();
    let mut x = Vec::with_capacity(n * width);
    let mut y = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    for v in vehicles {
        let days = v.days();
        for i in positions(days, spec) {
            x.extend_from_slice(&v.features[(i - spec.context) * nf..i * nf]);
            let end = (i + spec.horizon).min(days);
            y.push(if v.alarm_prefix[end] > v.alarm_prefix[i] {
                1.0
            } else {
                0.0
            });
            keys.push(WindowKey {
                vin: v.vin.to_owned(),
                date: date_of_day(v.first_day + i as i64).expect("inside the vehicle's dates"),
            });
        }
    }
    WindowBatch {
        x: Array2::from_shape_vec((n, width), x).expect("n × width values"),
        y: Array1::from(y),
        keys,
    }
}

/// A daily table held as columns, the layout of the Python and C surfaces: row `i` is
/// vehicle `vehicle[i]` (an index into `vins`) on day `day[i]` (days since 1970-01-01,
/// see [`day_of_date`]), `features[k][i]` is the value of the spec's k-th feature and
/// `label[i]` the row's label (none: every label NaN).
#[derive(Debug, Clone, Copy)]
pub struct DailyColumns<'a> {
    pub vins: &'a [String],
    pub vehicle: &'a [u32],
    pub day: &'a [i64],
    pub features: &'a [&'a [f64]],
    pub label: Option<&'a [f64]>,
}

/// Windows of a [`DailyColumns`] table, keyed by (vehicle index, day number).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnWindows {
    pub x: Array2<f32>,
    pub y: Array1<f32>,
    pub vehicle: Vec<u32>,
    pub day: Vec<i64>,
}

/// [`windows`] of a table held as columns, without a string per row: the same windows,
/// labels and errors, with vehicles in `vins` order (a caller numbering VINs by first
/// appearance gets [`windows`]' order) and rows of a vehicle in any order.
pub fn windows_of_columns(t: &DailyColumns<'_>, spec: &WindowSpec) -> Result<ColumnWindows> {
    let plan = ColumnPlan::new(t, spec)?;
    let n = plan.len();
    let mut x = vec![0f32; n * spec.width()];
    let mut y = vec![0f32; n];
    let mut vehicle = vec![0u32; n];
    let mut day = vec![0i64; n];
    plan.write(&mut x, &mut y, &mut vehicle, &mut day);
    Ok(ColumnWindows {
        x: Array2::from_shape_vec((n, spec.width()), x).expect("n × width values"),
        y: Array1::from(y),
        vehicle,
        day,
    })
}

/// [`windows_of_columns`] in two steps, so that a caller can allocate the output itself
/// (numpy, for instance, asks the kernel for huge pages): [`ColumnPlan::new`] checks the
/// table and counts the windows, [`ColumnPlan::write`] fills caller buffers.
#[derive(Debug, Clone)]
pub struct ColumnPlan<'a> {
    t: DailyColumns<'a>,
    spec: &'a WindowSpec,
    /// Row indices grouped by vehicle, each group sorted by day.
    order: Vec<u32>,
    /// Vehicle `v`'s rows are `order[start[v]..start[v + 1]]`.
    start: Vec<usize>,
    /// (first day, dense days) per vehicle.
    spans: Vec<(i64, usize)>,
    total: usize,
}

impl<'a> ColumnPlan<'a> {
    /// Checks the table (shapes, vehicle indices, calendar, duplicate days) and counts the
    /// windows.
    pub fn new(t: &DailyColumns<'a>, spec: &'a WindowSpec) -> Result<Self> {
        spec.validate()?;
        let t = *t;
        let n = t.vehicle.len();
        let nf = spec.features.len();
        let shape = |what: &str, expected: usize, found: usize| BmsError::Shape {
            what: what.into(),
            expected,
            found,
        };
        if t.features.len() != nf {
            return Err(shape(
                "feature columns (one per feature of the window spec)",
                nf,
                t.features.len(),
            ));
        }
        if t.day.len() != n {
            return Err(shape("day column length", n, t.day.len()));
        }
        if let Some(f) = t.features.iter().find(|f| f.len() != n) {
            return Err(shape("feature column length", n, f.len()));
        }
        if let Some(l) = t.label.filter(|l| l.len() != n) {
            return Err(shape("label column length", n, l.len()));
        }
        // Rows grouped by vehicle (a counting sort), table order kept within a vehicle.
        let nv = t.vins.len();
        let mut start = vec![0usize; nv + 1];
        for (i, &v) in t.vehicle.iter().enumerate() {
            if v as usize >= nv {
                return Err(BmsError::invalid(
                    "daily table",
                    format!("row {}: vehicle index {v}, but there are {nv} VINs", i + 1),
                ));
            }
            start[v as usize + 1] += 1;
        }
        for v in 0..nv {
            start[v + 1] += start[v];
        }
        let mut next = start.clone();
        let mut order = vec![0u32; n];
        for (i, &v) in t.vehicle.iter().enumerate() {
            order[next[v as usize]] = i as u32;
            next[v as usize] += 1;
        }
        let (min_day, max_day) = (
            day_of_date(NaiveDate::MIN) + 1,
            day_of_date(NaiveDate::MAX) - 1,
        );
        let day = |r: u32| t.day[r as usize];
        let mut spans = Vec::with_capacity(nv);
        let mut total = 0usize;
        for v in 0..nv {
            let rows = &mut order[start[v]..start[v + 1]];
            if rows.is_empty() {
                spans.push((0, 0));
                continue;
            }
            if !rows.is_sorted_by_key(|&r| day(r)) {
                rows.sort_by_key(|&r| day(r));
            }
            let (first, last) = (day(rows[0]), day(rows[rows.len() - 1]));
            if first < min_day || last > max_day {
                let bad = if first < min_day { first } else { last };
                return Err(BmsError::invalid(
                    "daily table",
                    format!(
                        "VIN {}: day {bad} since 1970-01-01 is outside the supported calendar",
                        t.vins[v]
                    ),
                ));
            }
            if let Some(w) = rows.windows(2).find(|w| day(w[0]) == day(w[1])) {
                return Err(BmsError::DuplicateDay {
                    file: None,
                    vin: t.vins[v].clone(),
                    date: date_of_day(day(w[0]))
                        .expect("inside the calendar")
                        .to_string(),
                    first_line: u64::from(w[0]) + 1,
                    second_line: u64::from(w[1]) + 1,
                });
            }
            let days = (last - first + 1) as usize;
            total += positions(days, spec).len();
            spans.push((first, days));
        }
        Ok(ColumnPlan {
            t,
            spec,
            order,
            start,
            spans,
            total,
        })
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Writes the windows: `x` is `[len(), spec.width()]` row-major, `y`, `vehicle` and
    /// `day` have `len()` elements. Panics if a buffer has another length.
    pub fn write(&self, x: &mut [f32], y: &mut [f32], vehicle: &mut [u32], day: &mut [i64]) {
        let (t, spec) = (&self.t, self.spec);
        let nf = spec.features.len();
        let width = spec.width();
        assert!(
            x.len() == self.total * width
                && y.len() == self.total
                && vehicle.len() == self.total
                && day.len() == self.total,
            "output buffers must hold {} windows",
            self.total
        );
        let fill = spec.fill as f32;
        let mut dense: Vec<f32> = Vec::new();
        let mut prefix: Vec<u32> = Vec::new();
        let mut k = 0;
        for (v, &(first, days)) in self.spans.iter().enumerate() {
            let pos = positions(days, spec);
            if pos.is_empty() {
                continue;
            }
            dense.clear();
            dense.resize(days * nf, fill);
            prefix.clear();
            prefix.resize(days + 1, 0);
            for &r in &self.order[self.start[v]..self.start[v + 1]] {
                let r = r as usize;
                let d = (t.day[r] - first) as usize;
                for (o, col) in dense[d * nf..(d + 1) * nf].iter_mut().zip(t.features) {
                    let value = col[r];
                    if !value.is_nan() {
                        *o = value as f32;
                    }
                }
                if t.label.is_some_and(|l| l[r] == 1.0) {
                    prefix[d + 1] = 1;
                }
            }
            for d in 0..days {
                prefix[d + 1] += prefix[d];
            }
            for i in pos {
                x[k * width..(k + 1) * width]
                    .copy_from_slice(&dense[(i - spec.context) * nf..i * nf]);
                let end = (i + spec.horizon).min(days);
                y[k] = if prefix[end] > prefix[i] { 1.0 } else { 0.0 };
                vehicle[k] = v as u32;
                day[k] = first + i as i64;
                k += 1;
            }
        }
    }
}
