//! The streaming monitor of one vehicle: frames in, daily rows and the model's window out,
//! one frame at a time (the C library's `bms_monitor` and Python's `bms.Monitor`).
//!
//! A [`Monitor`] keeps the open day's [`DayAccumulator`] (the accumulator
//! [`VehicleAggregator`](crate::daily::VehicleAggregator) uses, fed by the same
//! [`frame_features`], so a closed day is bit for bit the row `bms daily` writes), a ring of
//! the last C closed days (C = the model's context) and one window buffer. All of it is
//! allocated by [`Monitor::new`]: [`Monitor::push_frame`] and [`Monitor::advance_to`]
//! allocate nothing on success.
//!
//! The window of the open day is the last C closed days, day-major, each day's values in
//! the contract's feature order with NaN replaced by the contract's fill: the window
//! [`windows`](crate::window::windows) dates with the open day (SPEC §5).

use std::sync::Arc;

use chrono::NaiveDate;

use crate::daily::{
    DailyColumn, DailyConfig, DailyRow, DayAccumulator, N_DAILY_COLUMNS, date_of_day,
};
use crate::error::{BmsError, Result};
use crate::features::{FeatureConfig, frame_features};
use crate::frame::FrameRef;
use crate::model::Model;

/// How a monitor turns frames into days: the OCV curve and spread rule of the frame
/// features and the UTC offset where calendar days start (the configuration of
/// `bms daily`).
pub type MonitorConfig = DailyConfig;

/// A closed day held by a monitor: one row of the daily table without its VIN. A day
/// without frames has NaN everywhere (label included) except `frames = 0`.
#[derive(Debug, Clone, Copy)]
pub struct ClosedDay {
    day: i64,
    values: [f64; N_DAILY_COLUMNS],
    label: f64,
}

impl ClosedDay {
    fn empty(day: i64) -> Self {
        let mut values = [f64::NAN; N_DAILY_COLUMNS];
        values[DailyColumn::Frames.index()] = 0.0;
        ClosedDay {
            day,
            values,
            label: f64::NAN,
        }
    }

    /// The calendar day (at the monitor's UTC offset) as days since 1970-01-01.
    pub fn day(&self) -> i64 {
        self.day
    }

    /// The calendar day as a date.
    pub fn date(&self) -> NaiveDate {
        date_of_day(self.day).expect("a monitor only closes days inside the calendar")
    }

    /// The value of one daily column.
    pub fn get(&self, column: DailyColumn) -> f64 {
        self.values[column.index()]
    }

    /// Every daily column, indexed by [`DailyColumn::index`].
    pub fn values(&self) -> &[f64; N_DAILY_COLUMNS] {
        &self.values
    }

    /// 1.0 when a frame of the day had the consistency alarm, 0.0 if none did, NaN
    /// without frames.
    pub fn label(&self) -> f64 {
        self.label
    }

    /// The day as a row of the daily table of vehicle `vin`.
    pub fn to_row(&self, vin: &str) -> DailyRow {
        DailyRow {
            vin: vin.to_owned(),
            date: self.date(),
            values: self.values,
            label: self.label,
        }
    }
}

/// The last closed days, oldest first: the newest is `days[(start + len - 1) % C]`.
#[derive(Debug, Clone)]
struct Ring {
    days: Box<[ClosedDay]>,
    start: usize,
    len: usize,
}

impl Ring {
    fn capacity(&self) -> usize {
        self.days.len()
    }

    fn push(&mut self, day: ClosedDay) {
        let c = self.capacity();
        if self.len < c {
            self.days[(self.start + self.len) % c] = day;
            self.len += 1;
        } else {
            self.days[self.start] = day;
            self.start = (self.start + 1) % c;
        }
    }

    /// The `k`-th held day, oldest first.
    fn oldest(&self, k: usize) -> &ClosedDay {
        &self.days[(self.start + k) % self.capacity()]
    }
}

/// The streaming monitor of one vehicle scored by one model. Not for concurrent use (it is
/// `Send`, so it may move between threads).
///
/// Frames must arrive in strictly increasing time. Every error leaves the monitor exactly
/// as it was.
#[derive(Debug, Clone)]
pub struct Monitor {
    model: Arc<Model>,
    config: MonitorConfig,
    columns: Vec<DailyColumn>,
    fill: f32,
    ring: Ring,
    current_day: Option<i64>,
    acc: DayAccumulator,
    last_frame_ms: Option<i64>,
    /// Set by [`Monitor::advance_to`]: frames must not be older.
    floor_ms: Option<i64>,
    days_closed: u64,
    /// The window [`Monitor::predict`] scores.
    window: Box<[f32]>,
}

impl Monitor {
    /// A monitor whose windows follow `model`'s contract (context, features, fill) and
    /// whose days follow `config`. Fails on an unusable configuration (a spread threshold
    /// that is not a finite number ≥ 0) or contract.
    pub fn new(model: Arc<Model>, config: MonitorConfig) -> Result<Self> {
        model.require_probability()?;
        FeatureConfig::new(config.features.ocv.clone(), config.features.alarm_spread_v)?;
        let spec = &model.contract().spec;
        spec.validate()?;
        let (columns, fill) = (spec.features.clone(), spec.fill as f32);
        let ring = Ring {
            days: vec![ClosedDay::empty(0); spec.context].into_boxed_slice(),
            start: 0,
            len: 0,
        };
        let window = vec![0.0; spec.width()].into_boxed_slice();
        Ok(Monitor {
            model,
            config,
            columns,
            fill,
            ring,
            current_day: None,
            acc: DayAccumulator::default(),
            last_frame_ms: None,
            floor_ms: None,
            days_closed: 0,
            window,
        })
    }

    /// The model the monitor scores with.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The configuration the monitor was made with.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Days per window (C, the model's context): the most closed days held.
    pub fn context(&self) -> usize {
        self.ring.capacity()
    }

    /// Values per window: context × features per day.
    pub fn width(&self) -> usize {
        self.context() * self.columns.len()
    }

    /// Adds one frame of the vehicle (its `vin` is not looked at). A frame on a later
    /// calendar day than the open one closes the open day, and adds an empty day for each
    /// calendar day without frames in between, before opening its own.
    ///
    /// Errors, each leaving the monitor unchanged: [`BmsError::TimestampTooOld`] for a
    /// frame older than the latest frame or than the time of [`Monitor::advance_to`],
    /// [`BmsError::DuplicateTimestamp`] for the latest frame's timestamp again,
    /// [`BmsError::Invalid`] for a frame without cells or probes or a timestamp outside
    /// the calendar. Allocates nothing on success.
    pub fn push_frame(&mut self, frame: &FrameRef<'_>) -> Result<()> {
        if frame.cell_voltages.is_empty() {
            return Err(BmsError::invalid(
                "frame",
                "no cell voltages (at least one cell is required)",
            ));
        }
        if frame.temperatures.is_empty() {
            return Err(BmsError::invalid(
                "frame",
                "no temperatures (at least one probe is required)",
            ));
        }
        let day = self.admit(frame.timestamp_ms, true)?;
        let features = frame_features(frame, &self.config.features);
        match self.current_day {
            Some(d) if d == day => {}
            Some(d) => self.close_until(d, day),
            None => self.current_day = Some(day),
        }
        self.acc.push(frame, &features);
        self.last_frame_ms = Some(frame.timestamp_ms);
        Ok(())
    }

    /// Moves the monitor's clock to `timestamp_ms` without a frame: if that is on a later
    /// calendar day than the open day, the open day and any empty days before it are
    /// closed (a vehicle parked past midnight still gets its window). Later frames must not
    /// be older than `timestamp_ms`. Before the first frame this only sets that floor (the
    /// vehicle's history starts at its first frame).
    ///
    /// Errors as [`Monitor::push_frame`] (an equal timestamp is allowed); the monitor is
    /// then unchanged.
    pub fn advance_to(&mut self, timestamp_ms: i64) -> Result<()> {
        let day = self.admit(timestamp_ms, false)?;
        if let Some(d) = self.current_day.filter(|&d| day > d) {
            self.close_until(d, day);
        }
        self.floor_ms = Some(timestamp_ms);
        Ok(())
    }

    /// Checks that `timestamp_ms` may come next and returns its day; changes nothing.
    fn admit(&self, timestamp_ms: i64, is_frame: bool) -> Result<i64> {
        if let Some(last) = self.last_frame_ms {
            if is_frame && timestamp_ms == last {
                return Err(BmsError::DuplicateTimestamp { timestamp_ms });
            }
            if timestamp_ms < last {
                return Err(BmsError::TimestampTooOld {
                    timestamp_ms,
                    latest_ms: last,
                    advanced: false,
                });
            }
        }
        if let Some(floor) = self.floor_ms.filter(|&f| timestamp_ms < f) {
            return Err(BmsError::TimestampTooOld {
                timestamp_ms,
                latest_ms: floor,
                advanced: true,
            });
        }
        let day = self.config.utc_offset.day_number(timestamp_ms);
        if self.current_day != Some(day) && date_of_day(day).is_none() {
            return Err(BmsError::invalid(
                "timestamp",
                format!("{timestamp_ms} ms is outside the supported calendar"),
            ));
        }
        Ok(day)
    }

    /// Closes the open day `d` and the empty days after it, and opens `day` (> `d`).
    fn close_until(&mut self, d: i64, day: i64) {
        let date = date_of_day(d).expect("checked when the day opened");
        // The VIN is empty: `finish` allocates nothing for it.
        let row = self.acc.finish("", date);
        self.ring.push(ClosedDay {
            day: d,
            values: row.values,
            label: row.label,
        });
        self.days_closed += 1;
        self.acc = DayAccumulator::default();
        // Only the last C empty days can stay in the ring; the others are only counted.
        let gap = (day - d - 1) as u64;
        let kept = gap.min(self.context() as u64);
        self.days_closed += gap;
        for g in day - kept as i64..day {
            self.ring.push(ClosedDay::empty(g));
        }
        self.current_day = Some(day);
    }

    /// Number of closed days held (at most [`Monitor::context`]).
    pub fn days_held(&self) -> usize {
        self.ring.len
    }

    /// Total number of days closed since the monitor was made, including those no longer
    /// held: compare before and after a push to see how many days it closed.
    pub fn days_closed(&self) -> u64 {
        self.days_closed
    }

    /// A held closed day: `age` 0 is the most recently closed day, 1 the one before, up to
    /// `days_held() - 1`; beyond that `None`.
    pub fn day(&self, age: usize) -> Option<&ClosedDay> {
        (age < self.ring.len).then(|| self.ring.oldest(self.ring.len - 1 - age))
    }

    /// The open day (days since 1970-01-01 at the monitor's UTC offset), the date the
    /// current window scores; `None` before the first frame.
    pub fn current_day(&self) -> Option<i64> {
        self.current_day
    }

    /// Whether a window is available: [`Monitor::context`] days have closed.
    pub fn is_ready(&self) -> bool {
        self.ring.len == self.context()
    }

    fn not_ready(&self) -> BmsError {
        BmsError::NotReady {
            reason: format!(
                "{} of the model's {} days closed so far",
                self.ring.len,
                self.context()
            ),
        }
    }

    /// Writes the current window into `out` (exactly [`Monitor::width`] values): the last
    /// C closed days, oldest first, NaN replaced by the contract's fill. A
    /// [`BmsError::Shape`] for another length, [`BmsError::NotReady`] before C days have
    /// closed; `out` is written only on success.
    pub fn window_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.width() {
            return Err(BmsError::Shape {
                what: "window buffer length".into(),
                expected: self.width(),
                found: out.len(),
            });
        }
        if !self.is_ready() {
            return Err(self.not_ready());
        }
        write_window(&self.ring, &self.columns, self.fill, out);
        Ok(())
    }

    /// The model's probability for the current window (see [`Monitor::window_into`]);
    /// [`BmsError::NotReady`] before C days have closed.
    pub fn predict(&mut self) -> Result<f32> {
        if !self.is_ready() {
            return Err(self.not_ready());
        }
        write_window(&self.ring, &self.columns, self.fill, &mut self.window);
        let view = ndarray::ArrayView2::from_shape((1, self.window.len()), &self.window[..])
            .map_err(|e| BmsError::model(e.to_string()))?;
        self.model
            .predict(view)?
            .first()
            .copied()
            .ok_or_else(|| BmsError::model("the model gave no probability for the window"))
    }
}

/// The window of a full ring: its days oldest first, each day's `columns` in order, NaN
/// replaced by `fill`; `out` holds exactly `ring.capacity() × columns.len()` values.
fn write_window(ring: &Ring, columns: &[DailyColumn], fill: f32, out: &mut [f32]) {
    debug_assert_eq!(ring.len, ring.capacity());
    debug_assert_eq!(out.len(), ring.capacity() * columns.len());
    for (k, chunk) in out.chunks_exact_mut(columns.len()).enumerate() {
        let day = ring.oldest(k);
        for (o, col) in chunk.iter_mut().zip(columns) {
            let v = day.get(*col);
            *o = if v.is_nan() { fill } else { v as f32 };
        }
    }
}

// A monitor may be handed from one thread to another.
const _: () = {
    const fn movable<T: Send>() {}
    movable::<Monitor>();
};
