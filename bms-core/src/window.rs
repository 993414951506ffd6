//! Windows and labels (SPEC §5).
//!
//! Per vehicle, rows are sorted by date and made dense (missing calendar days become
//! all-NaN rows). For each position `i ≥ context`, the window holds rows `i−context … i−1`
//! day-major (oldest day first, each day's features in `spec.features` order), NaN replaced
//! by `spec.fill`; its label is 1.0 when any row in `i … i+horizon−1` that exists has label
//! 1.0; its date is the date of row `i`.

use std::collections::HashMap;
use std::ops::Range;

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
        if let Err(reason) = crate::io::check_range(self.fill) {
            // Windows carry the fill to the model and into batch files, whose readers
            // refuse such a value.
            return Err(BmsError::invalid(
                "window spec",
                format!("fill value {} {reason}", self.fill),
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
    crate::daily::check_span(vin, first_day, last_day)
        .map_err(|reason| BmsError::invalid("daily table", reason))?;
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
/// vehicle `vehicle[i]` (an index into `vins`) on the date `day[i]`, `features[k][i]` is
/// the value of the spec's k-th feature and `label[i]` the row's label (none: every label
/// NaN).
///
/// Dates count `1 / ticks_per_day` days since 1970-01-01: with 1 they are day numbers (see
/// [`day_of_date`]), with [`NANOS_PER_DAY`] nanoseconds (a datetime64\[ns\] column's
/// integers), and so on; a row is on the day its date falls in (floor division, so
/// 1969-12-31T12:00 is day −1). With more than one tick per day, `i64::MIN` is a missing
/// date (numpy's NaT) and an error.
#[derive(Debug, Clone, Copy)]
pub struct DailyColumns<'a> {
    pub vins: &'a [String],
    pub vehicle: &'a [u32],
    pub day: &'a [i64],
    pub ticks_per_day: i64,
    pub features: &'a [&'a [f64]],
    pub label: Option<&'a [f64]>,
}

/// Ticks per day of nanosecond dates.
pub const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// The day numbers of `ticks` (`ticks_per_day` ≥ 1) into `out`: the common units with a
/// constant divisor (a multiply), others with a division.
fn day_numbers(ticks: impl Iterator<Item = i64>, ticks_per_day: i64, out: &mut [i64]) {
    fn by<const D: i64>(ticks: impl Iterator<Item = i64>, out: &mut [i64]) {
        for (o, t) in out.iter_mut().zip(ticks) {
            *o = t.div_euclid(D);
        }
    }
    match ticks_per_day {
        1 => by::<1>(ticks, out),
        86_400 => by::<86_400>(ticks, out),
        86_400_000 => by::<86_400_000>(ticks, out),
        86_400_000_000 => by::<86_400_000_000>(ticks, out),
        NANOS_PER_DAY => by::<NANOS_PER_DAY>(ticks, out),
        d => {
            for (o, t) in out.iter_mut().zip(ticks) {
                *o = t.div_euclid(d);
            }
        }
    }
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
    plan.write(&mut x, &mut y, Some(&mut vehicle), &mut day);
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
    /// Per vehicle.
    spans: Vec<Span>,
    total: usize,
}

/// A vehicle's days.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    /// First day.
    first: i64,
    /// Days from the first to the last, gaps included.
    days: usize,
    /// `Some(r)` when the vehicle's rows are the table's rows `r, r + 1, …` for days 0,
    /// 1, … without a gap (a table grouped by vehicle, sorted and dense).
    stretch: Option<usize>,
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
        let tpd = t.ticks_per_day;
        if tpd < 1 {
            return Err(BmsError::invalid(
                "daily table",
                format!("{tpd} ticks per day (at least 1)"),
            ));
        }
        // NaT, with more than one tick a day (found per vehicle, reported at the first row).
        let nat = |d: i64| tpd > 1 && d == i64::MIN;
        let missing = || {
            let i = t.day.iter().position(|&d| nat(d)).expect("a NaT was seen");
            BmsError::invalid(
                "daily table",
                format!("row {}, column Date: missing date", i + 1),
            )
        };
        if let Some(f) = t.features.iter().find(|f| f.len() != n) {
            return Err(shape("feature column length", n, f.len()));
        }
        if let Some(l) = t.label.filter(|l| l.len() != n) {
            return Err(shape("label column length", n, l.len()));
        }
        // Rows grouped by vehicle (a counting sort), table order kept within a vehicle.
        // Counted and placed a run of equal vehicles at a time: tables are usually grouped
        // by vehicle, and a counter bumped row after row waits on its own last store.
        let nv = t.vins.len();
        let mut start = vec![0usize; nv + 1];
        // Runs per vehicle, and where the first starts: a vehicle in one run is one stretch
        // of the table.
        let mut nruns = vec![0u32; nv];
        let mut first_row = vec![0usize; nv];
        for (v, rows) in runs(t.vehicle) {
            if v as usize >= nv {
                return Err(BmsError::invalid(
                    "daily table",
                    format!(
                        "row {}: vehicle index {v}, but there are {nv} VINs",
                        rows.start + 1
                    ),
                ));
            }
            start[v as usize + 1] += rows.len();
            if nruns[v as usize] == 0 {
                first_row[v as usize] = rows.start;
            }
            nruns[v as usize] = nruns[v as usize].saturating_add(1);
        }
        for v in 0..nv {
            start[v + 1] += start[v];
        }
        // Vehicles in several runs are placed here; one-run vehicles in parallel below.
        let mut order = vec![0u32; n];
        if nruns.iter().any(|&r| r > 1) {
            let mut next = start.clone();
            for (v, rows) in runs(t.vehicle) {
                let v = v as usize;
                if nruns[v] > 1 {
                    for (o, r) in order[next[v]..next[v] + rows.len()]
                        .iter_mut()
                        .zip(rows.clone())
                    {
                        *o = r as u32;
                    }
                    next[v] += rows.len();
                }
            }
        }
        let (min_day, max_day) = (
            day_of_date(NaiveDate::MIN) + 1,
            day_of_date(NaiveDate::MAX) - 1,
        );
        let outside = |v: usize, day: i64| {
            BmsError::invalid(
                "daily table",
                format!(
                    "VIN {}: day {day} since 1970-01-01 is outside the supported calendar",
                    t.vins[v]
                ),
            )
        };
        // Vehicle v's rows (in table order) and room for day numbers: sorts the rows by day,
        // checks them and gives the vehicle's span.
        let span = |v: usize, rows: &mut [u32], days: &mut Vec<i64>| -> Result<Span> {
            let len = rows.len();
            if len == 0 {
                return Ok(Span::default());
            }
            if nruns[v] == 1 {
                for (o, r) in rows.iter_mut().zip(first_row[v]..) {
                    *o = r as u32;
                }
            }
            let r0 = rows[0] as usize;
            // One stretch of the table with dates one day apart, the common case: the days
            // are the first one's, + 1, + 2, … (no day numbers needed).
            if nruns[v] == 1 {
                let ticks = &t.day[r0..r0 + len];
                let steps = ticks
                    .windows(2)
                    .fold(true, |ok, w| ok & (w[1].wrapping_sub(w[0]) == tpd));
                // (No wrap around the ends of i64 on the way.)
                let reached = (len as i64 - 1)
                    .checked_mul(tpd)
                    .and_then(|span| ticks[0].checked_add(span))
                    == Some(ticks[len - 1]);
                if steps && reached && !nat(ticks[0]) {
                    let first = ticks[0].div_euclid(tpd);
                    let last = first.saturating_add(len as i64 - 1);
                    if first < min_day || last > max_day {
                        return Err(outside(v, if first < min_day { first } else { last }));
                    }
                    return Ok(Span {
                        first,
                        days: len,
                        stretch: Some(r0),
                    });
                }
            }
            if rows.iter().any(|&r| nat(t.day[r as usize])) {
                return Err(missing());
            }
            days.resize(len, 0);
            day_numbers(rows.iter().map(|&r| t.day[r as usize]), tpd, days);
            let sorted = days.is_sorted();
            if !sorted {
                // Stable: rows of one day keep table order (for the duplicate's message).
                let mut by_day: Vec<(i64, u32)> =
                    days.iter().copied().zip(rows.iter().copied()).collect();
                by_day.sort_by_key(|&(d, _)| d);
                for ((d, r), (od, or)) in days.iter_mut().zip(rows.iter_mut()).zip(by_day) {
                    (*d, *r) = (od, or);
                }
            }
            let (first, last) = (days[0], days[len - 1]);
            if first < min_day || last > max_day {
                return Err(outside(v, if first < min_day { first } else { last }));
            }
            crate::daily::check_span(&t.vins[v], first, last)
                .map_err(|reason| BmsError::invalid("daily table", reason))?;
            if let Some(i) = days.windows(2).position(|w| w[0] == w[1]) {
                return Err(BmsError::DuplicateDay {
                    file: None,
                    vin: t.vins[v].clone(),
                    date: date_of_day(days[i])
                        .expect("inside the calendar")
                        .to_string(),
                    first_line: u64::from(rows[i]) + 1,
                    second_line: u64::from(rows[i + 1]) + 1,
                });
            }
            let dense = (last - first + 1) as usize;
            let stretch = (sorted && nruns[v] == 1 && len == dense).then_some(r0);
            Ok(Span {
                first,
                days: dense,
                stretch,
            })
        };
        // Runs of vehicles in parallel, each on its own stretch of `order`; the first error
        // in vehicle order wins, as in a sequential loop.
        let runs = vehicle_runs((0..nv).map(|v| start[v + 1] - start[v]), n);
        let mut parts = Vec::with_capacity(runs.len());
        let mut rest = &mut order[..];
        for r in runs {
            let (head, tail) = rest.split_at_mut(start[r.end] - start[r.start]);
            parts.push((r, head));
            rest = tail;
        }
        let run_spans = |(r, rows): (Range<usize>, &mut [u32])| -> Result<Vec<Span>> {
            let base = start[r.start];
            let mut days = Vec::new();
            r.map(|v| {
                span(
                    v,
                    &mut rows[start[v] - base..start[v + 1] - base],
                    &mut days,
                )
            })
            .collect()
        };
        let spans = par::map(parts, run_spans)
            .into_iter()
            .collect::<Result<Vec<_>>>()
            // A missing date comes first, whatever else is wrong.
            .map_err(|e| {
                if t.day.iter().any(|&d| nat(d)) {
                    missing()
                } else {
                    e
                }
            })?
            .concat();
        let total = spans.iter().map(|s| positions(s.days, spec).len()).sum();
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

    /// Windows of each vehicle (in `vins` order): the output holds vehicle 0's windows,
    /// then vehicle 1's...
    pub fn window_counts(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.window_counts_of(0..self.spans.len())
    }

    fn window_counts_of(&self, vehicles: Range<usize>) -> impl ExactSizeIterator<Item = usize> {
        self.spans[vehicles]
            .iter()
            .map(|s| positions(s.days, self.spec).len())
    }

    /// Writes the windows: `x` is `[len(), spec.width()]` row-major, `y`, `day` (and
    /// `vehicle`, when asked for) have `len()` elements. Panics if a buffer has another
    /// length.
    ///
    /// Large tables are written in parallel on the current rayon pool (see
    /// `vehicle_runs`), each run of vehicles filling its own contiguous stretch of the
    /// buffers (and taking the page faults of a fresh buffer on its own thread). The result
    /// does not depend on the number of threads.
    pub fn write(
        &self,
        x: &mut [f32],
        y: &mut [f32],
        vehicle: Option<&mut [u32]>,
        day: &mut [i64],
    ) {
        let spec = self.spec;
        let width = spec.width();
        assert!(
            x.len() == self.total * width
                && y.len() == self.total
                && vehicle.as_ref().is_none_or(|v| v.len() == self.total)
                && day.len() == self.total,
            "output buffers must hold {} windows",
            self.total
        );
        let runs = vehicle_runs(self.window_counts(), self.total);
        let mut parts = Vec::with_capacity(runs.len());
        let mut rest = Out { x, y, vehicle, day };
        for r in runs {
            let windows = self.window_counts_of(r.clone()).sum();
            let (head, tail) = rest.split_at(windows, width);
            parts.push((r, head));
            rest = tail;
        }
        par::map(parts, |(vehicles, out)| self.write_vehicles(vehicles, out));
    }

    /// The cache lines of vehicle v's feature values and labels, appended to `lines` when
    /// its rows are one stretch of the table (a table grouped by vehicle): the values are
    /// prefetched while the vehicle before writes its windows, reading them cold otherwise
    /// stalls the transpose.
    fn lines_of(&self, v: usize, lines: &mut Vec<*const f64>) {
        let Span {
            days,
            stretch: Some(r),
            ..
        } = self.spans[v]
        else {
            return;
        };
        for col in self.t.features.iter().chain(self.t.label.as_ref()) {
            lines.extend(col[r..r + days].chunks(8).map(<[f64]>::as_ptr));
        }
    }

    /// Writes the windows of `vehicles` (a run of vehicle indices) into `out`, which holds
    /// exactly their windows.
    fn write_vehicles(&self, vehicles: Range<usize>, out: Out<'_>) {
        let (t, spec) = (&self.t, self.spec);
        let nf = spec.features.len();
        let width = spec.width();
        let fill = spec.fill as f32;
        let Out {
            x,
            y,
            mut vehicle,
            day,
        } = out;
        let mut dense: Vec<f32> = Vec::new();
        let mut column: Vec<f32> = Vec::new();
        let mut prefix: Vec<u32> = Vec::new();
        let mut ahead: Vec<*const f64> = Vec::new();
        let mut days_of: Vec<i64> = Vec::new();
        let value = |v: f64| if v.is_nan() { fill } else { v as f32 };
        let mut k = 0;
        for v in vehicles.clone() {
            let Span {
                first,
                days,
                stretch,
            } = self.spans[v];
            let pos = positions(days, spec);
            if pos.is_empty() {
                continue;
            }
            // The next vehicle's values, asked for a few cache lines per window written.
            ahead.clear();
            if v + 1 < vehicles.end {
                self.lines_of(v + 1, &mut ahead);
            }
            if dense.len() < days * nf {
                dense.resize(days * nf, fill);
                column.resize(days, fill);
                prefix.resize(days + 1, 0);
            }
            let dense = &mut dense[..days * nf];
            let prefix = &mut prefix[..days + 1];
            prefix[0] = 0;
            if let Some(r) = stretch {
                // Rows r, r + 1, ... are days 0, 1, ...: every value is written, a transpose
                // of the column stretches.
                let r = r..r + days;
                for (c, col) in t.features.iter().enumerate() {
                    // Converted in one (vectorised) pass, then spread with a stride.
                    for (o, &x) in column.iter_mut().zip(&col[r.clone()]) {
                        *o = value(x);
                    }
                    for (day, &x) in dense.chunks_exact_mut(nf).zip(&column) {
                        day[c] = x;
                    }
                }
                match t.label {
                    Some(l) => {
                        for (p, &x) in prefix[1..].iter_mut().zip(&l[r]) {
                            *p = u32::from(x == 1.0);
                        }
                    }
                    None => prefix.fill(0),
                }
            } else {
                // Missing days stay `fill` (and no alarm).
                dense.fill(fill);
                prefix.fill(0);
                let rows = &self.order[self.start[v]..self.start[v + 1]];
                days_of.resize(rows.len(), 0);
                let ticks = rows.iter().map(|&r| t.day[r as usize]);
                day_numbers(ticks, t.ticks_per_day, &mut days_of);
                for (&r, &day) in rows.iter().zip(&days_of) {
                    let r = r as usize;
                    let d = (day - first) as usize;
                    for (o, col) in dense[d * nf..(d + 1) * nf].iter_mut().zip(t.features) {
                        *o = value(col[r]);
                    }
                    if t.label.is_some_and(|l| l[r] == 1.0) {
                        prefix[d + 1] = 1;
                    }
                }
            }
            for d in 0..days {
                prefix[d + 1] += prefix[d];
            }
            // Window i is the contiguous slice of days i − context … i − 1 of `dense`.
            let n = pos.len();
            let windows = x[k * width..(k + n) * width].chunks_exact_mut(width);
            let per = ahead.len().div_ceil(n);
            let mut lines = ahead.chunks(per.max(1));
            for (i, xw) in pos.clone().zip(windows) {
                xw.copy_from_slice(&dense[(i - spec.context) * nf..i * nf]);
                for &p in lines.next().unwrap_or_default() {
                    prefetch(p);
                }
            }
            for (i, yw) in pos.clone().zip(&mut y[k..k + n]) {
                let end = (i + spec.horizon).min(days);
                *yw = if prefix[end] > prefix[i] { 1.0 } else { 0.0 };
            }
            for (i, dw) in pos.zip(&mut day[k..k + n]) {
                *dw = first + i as i64;
            }
            if let Some(vehicle) = vehicle.as_deref_mut() {
                vehicle[k..k + n].fill(v as u32);
            }
            k += n;
        }
        debug_assert_eq!(k, y.len(), "the run's buffers hold exactly its windows");
    }
}

/// Runs of equal values of `vehicle`: (value, rows).
fn runs(vehicle: &[u32]) -> impl Iterator<Item = (u32, Range<usize>)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let &v = vehicle.get(i)?;
        let rest = &vehicle[i..];
        // Whole blocks first (compared without a branch per value), then value by value.
        let blocks = rest
            .chunks_exact(16)
            .take_while(|b| b.iter().fold(true, |same, &w| same & (w == v)))
            .count();
        let len = 16 * blocks + rest[16 * blocks..].iter().take_while(|&&w| w == v).count();
        i += len;
        Some((v, i - len..i))
    })
}

/// A hint that `p` will be read soon.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address; SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Work (rows or windows) below which a run of vehicles is not split further.
const MIN_RUN: usize = 4096;

/// Consecutive runs of vehicles for parallel work, given each vehicle's share of `total`
/// (rows, windows): a few runs per thread of at least [`MIN_RUN`] each, so that a thread
/// done early takes another; one run when the work is small or there is one thread.
fn vehicle_runs(work: impl Iterator<Item = usize>, total: usize) -> Vec<Range<usize>> {
    let threads = par::threads();
    if threads <= 1 || total < 2 * MIN_RUN {
        let all = 0..work.count();
        return vec![all];
    }
    let part = (total / (16 * threads)).max(MIN_RUN);
    let mut runs = Vec::new();
    let (mut first, mut acc, mut nv) = (0, 0, 0);
    for (v, w) in work.enumerate() {
        acc += w;
        nv = v + 1;
        if acc >= part {
            runs.push(first..nv);
            (first, acc) = (nv, 0);
        }
    }
    if first < nv || runs.is_empty() {
        runs.push(first..nv);
    }
    runs
}

/// Output buffers of [`ColumnPlan::write`] (or of a run of its vehicles).
struct Out<'o> {
    x: &'o mut [f32],
    y: &'o mut [f32],
    vehicle: Option<&'o mut [u32]>,
    day: &'o mut [i64],
}

impl<'o> Out<'o> {
    /// The first `n` windows and the rest.
    fn split_at(self, n: usize, width: usize) -> (Out<'o>, Out<'o>) {
        let (xa, xb) = self.x.split_at_mut(n * width);
        let (ya, yb) = self.y.split_at_mut(n);
        let (va, vb) = match self.vehicle {
            Some(v) => {
                let (a, b) = v.split_at_mut(n);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let (da, db) = self.day.split_at_mut(n);
        (
            Out {
                x: xa,
                y: ya,
                vehicle: va,
                day: da,
            },
            Out {
                x: xb,
                y: yb,
                vehicle: vb,
                day: db,
            },
        )
    }
}

/// Parts of a table worked on in parallel (feature `parallel`) or one after the other.
mod par {
    /// `f` of every part, in order; on the thread pool when there is more than one part.
    #[cfg(feature = "parallel")]
    pub fn map<T: Send, R: Send>(parts: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
        use rayon::prelude::*;
        if parts.len() > 1 {
            parts.into_par_iter().map(f).collect()
        } else {
            parts.into_iter().map(f).collect()
        }
    }

    /// `f` of every part, in order.
    #[cfg(not(feature = "parallel"))]
    pub fn map<T, R>(parts: Vec<T>, f: impl Fn(T) -> R) -> Vec<R> {
        parts.into_iter().map(f).collect()
    }

    /// Threads the work may be split over.
    pub fn threads() -> usize {
        #[cfg(feature = "parallel")]
        return rayon::current_num_threads();
        #[cfg(not(feature = "parallel"))]
        return 1;
    }
}
