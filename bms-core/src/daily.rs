//! The daily table (SPEC §4): one row per vehicle per calendar day, aggregated from frames.
//!
//! Days are calendar days at a fixed UTC offset (UTC by default; data stamped in Beijing
//! time uses +08:00). Between a vehicle's first and last day with frames every calendar day
//! is present; a day without frames has NaN in every numeric field (label included) and
//! `frames = 0`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::{BmsError, Location, Result};
use crate::features::{FeatureConfig, FrameFeatures, frame_features};
use crate::frame::{FrameRef, Frames};

/// The six reference columns, in the reference order.
pub const REFERENCE_COLUMNS: [DailyColumn; 6] = [
    DailyColumn::TotalVoltage,
    DailyColumn::TotalCurrent,
    DailyColumn::CellMaxVoltage,
    DailyColumn::CellMinVoltage,
    DailyColumn::MaxTemperature,
    DailyColumn::MinTemperature,
];

/// The project's extended columns, in order.
pub const EXTENDED_COLUMNS: [DailyColumn; 5] = [
    DailyColumn::SpreadMean,
    DailyColumn::SpreadMax,
    DailyColumn::TempDeltaMax,
    DailyColumn::SocDeviationMean,
    DailyColumn::Frames,
];

/// A numeric (feature) column of the daily table. `Label` is not a feature column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DailyColumn {
    TotalVoltage,
    TotalCurrent,
    CellMaxVoltage,
    CellMinVoltage,
    MaxTemperature,
    MinTemperature,
    SpreadMean,
    SpreadMax,
    TempDeltaMax,
    SocDeviationMean,
    Frames,
}

/// Number of numeric feature columns in a [`DailyRow`].
pub const N_DAILY_COLUMNS: usize = 11;

impl DailyColumn {
    pub const ALL: [DailyColumn; N_DAILY_COLUMNS] = [
        DailyColumn::TotalVoltage,
        DailyColumn::TotalCurrent,
        DailyColumn::CellMaxVoltage,
        DailyColumn::CellMinVoltage,
        DailyColumn::MaxTemperature,
        DailyColumn::MinTemperature,
        DailyColumn::SpreadMean,
        DailyColumn::SpreadMax,
        DailyColumn::TempDeltaMax,
        DailyColumn::SocDeviationMean,
        DailyColumn::Frames,
    ];

    /// The column's name in files (reference names for the reference columns).
    pub const fn name(self) -> &'static str {
        match self {
            DailyColumn::TotalVoltage => "TotalVoltage",
            DailyColumn::TotalCurrent => "TotalCurrent",
            DailyColumn::CellMaxVoltage => "CellMaxVoltage",
            DailyColumn::CellMinVoltage => "CellMinVoltage",
            DailyColumn::MaxTemperature => "MaxTemperature",
            DailyColumn::MinTemperature => "MinTemperature",
            DailyColumn::SpreadMean => "spread_mean",
            DailyColumn::SpreadMax => "spread_max",
            DailyColumn::TempDeltaMax => "temp_delta_max",
            DailyColumn::SocDeviationMean => "soc_deviation_mean",
            DailyColumn::Frames => "frames",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn from_name(name: &str) -> Result<Self> {
        DailyColumn::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                BmsError::invalid(
                    "daily column",
                    format!(
                        "'{name}' (known columns: {})",
                        DailyColumn::ALL.map(|c| c.name()).join(", ")
                    ),
                )
            })
    }

    /// Parses a comma-separated list of column names.
    pub fn parse_list(list: &str) -> Result<Vec<Self>> {
        list.split(',')
            .map(|s| DailyColumn::from_name(s.trim()))
            .collect()
    }
}

impl fmt::Display for DailyColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<DailyColumn> for String {
    fn from(c: DailyColumn) -> String {
        c.name().to_owned()
    }
}

impl TryFrom<String> for DailyColumn {
    type Error = BmsError;
    fn try_from(s: String) -> Result<Self> {
        DailyColumn::from_name(&s)
    }
}

/// One vehicle-day. Equality treats NaN as equal to NaN (a missing value equals a missing
/// value) and otherwise compares exactly.
#[derive(Debug, Clone)]
pub struct DailyRow {
    pub vin: String,
    pub date: NaiveDate,
    /// Indexed by [`DailyColumn::index`].
    pub values: [f64; N_DAILY_COLUMNS],
    /// 1.0 alarm day, 0.0 no alarm, NaN unknown.
    pub label: f64,
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

impl PartialEq for DailyRow {
    fn eq(&self, other: &Self) -> bool {
        self.vin == other.vin
            && self.date == other.date
            && same(self.label, other.label)
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|(&a, &b)| same(a, b))
    }
}

impl DailyRow {
    /// A day without data: every field NaN, `frames = 0`.
    pub fn empty(vin: &str, date: NaiveDate) -> Self {
        let mut values = [f64::NAN; N_DAILY_COLUMNS];
        values[DailyColumn::Frames.index()] = 0.0;
        DailyRow {
            vin: vin.to_owned(),
            date,
            values,
            label: f64::NAN,
        }
    }

    #[inline]
    pub fn get(&self, column: DailyColumn) -> f64 {
        self.values[column.index()]
    }

    pub fn set(&mut self, column: DailyColumn, value: f64) {
        self.values[column.index()] = value;
    }
}

/// A daily table: rows in any order (aggregation produces them sorted by VIN, then date).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DailyTable {
    pub rows: Vec<DailyRow>,
}

impl DailyTable {
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A fixed offset from UTC that defines where calendar days start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UtcOffset {
    seconds: i32,
}

impl UtcOffset {
    pub const UTC: UtcOffset = UtcOffset { seconds: 0 };
    /// Beijing time, +08:00.
    pub const BEIJING: UtcOffset = UtcOffset { seconds: 8 * 3600 };

    pub fn from_seconds(seconds: i32) -> Result<Self> {
        if seconds.abs() >= 24 * 3600 {
            return Err(BmsError::invalid(
                "UTC offset",
                format!("{seconds} s (must be less than 24 hours in either direction)"),
            ));
        }
        Ok(UtcOffset { seconds })
    }

    pub fn seconds(self) -> i32 {
        self.seconds
    }

    /// The calendar day holding `timestamp_ms`, as days since 1970-01-01.
    #[inline]
    pub fn day_number(self, timestamp_ms: i64) -> i64 {
        (timestamp_ms as i128 + self.seconds as i128 * 1000).div_euclid(86_400_000) as i64
    }
}

impl std::str::FromStr for UtcOffset {
    type Err = BmsError;
    /// Accepts `Z`, `UTC`, `±HH`, `±HHMM` and `±HH:MM`.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
            return Ok(UtcOffset::UTC);
        }
        let bad = || {
            BmsError::invalid(
                "UTC offset",
                format!("'{s}' (expected e.g. +08:00, -0530, +8 or UTC)"),
            )
        };
        let (sign, rest) = match t.as_bytes().first() {
            Some(b'+') => (1, &t[1..]),
            Some(b'-') => (-1, &t[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = if let Some((h, m)) = rest.split_once(':') {
            (h, m)
        } else if rest.len() == 4 {
            rest.split_at(2)
        } else {
            (rest, "00")
        };
        // Digits only (`str::parse` would also take a sign: `-+8`, `++8`): one or two of
        // hours, two of minutes.
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !(1..=2).contains(&h.len()) || m.len() != 2 || !digits(h) || !digits(m) {
            return Err(bad());
        }
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if !(0..60).contains(&m) || !(0..24).contains(&h) {
            return Err(bad());
        }
        UtcOffset::from_seconds(sign * (h * 3600 + m * 60))
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.seconds < 0 { '-' } else { '+' };
        let a = self.seconds.abs();
        write!(f, "{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    }
}

const EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// The date of day number `day` (days since 1970-01-01).
pub fn date_of_day(day: i64) -> Option<NaiveDate> {
    i32::try_from(day + EPOCH_DAYS_FROM_CE)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
}

/// Day number (days since 1970-01-01) of `date`.
pub fn day_of_date(date: NaiveDate) -> i64 {
    date.num_days_from_ce() as i64 - EPOCH_DAYS_FROM_CE
}

/// The most days one vehicle's history may span, first to last day (100 years): its days
/// are made dense, so a wrong date (0001-01-01 next to 2024 dates) would otherwise make
/// millions of empty rows and windows silently.
pub const MAX_SPAN_DAYS: i64 = 36_525;

/// Refuses a vehicle whose days `first..=last` (day numbers) span more than
/// [`MAX_SPAN_DAYS`]; the reason names the VIN, both dates and the span.
pub fn check_span(vin: &str, first: i64, last: i64) -> std::result::Result<(), String> {
    let span = last.saturating_sub(first).saturating_add(1);
    if span <= MAX_SPAN_DAYS {
        return Ok(());
    }
    let date = |d: i64| date_of_day(d).map_or_else(|| format!("day {d}"), |d| d.to_string());
    Err(format!(
        "VIN {vin}: its days run from {} to {} ({span} days), beyond the {MAX_SPAN_DAYS} days \
         (100 years) one history may span; a date is probably wrong",
        date(first),
        date(last)
    ))
}

use chrono::Datelike;

/// How frames become daily rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DailyConfig {
    pub features: FeatureConfig,
    pub utc_offset: UtcOffset,
}

#[derive(Debug, Clone, Copy, Default)]
struct Mean {
    sum: f64,
    n: u32,
}

impl Mean {
    #[inline]
    fn add(&mut self, x: f64) {
        if !x.is_nan() {
            self.sum += x;
            self.n += 1;
        }
    }
    fn get(self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.sum / self.n as f64
        }
    }
}

#[inline]
fn nan_max(acc: f64, x: f64) -> f64 {
    if x.is_nan() {
        acc
    } else if acc.is_nan() {
        x
    } else {
        acc.max(x)
    }
}

/// Accumulates the frames of one vehicle-day. Order-independent except for the last bits of
/// floating-point sums, which follow push order.
#[derive(Debug, Clone, Copy)]
pub struct DayAccumulator {
    pack_voltage: Mean,
    pack_current: Mean,
    cell_max: Mean,
    cell_min: Mean,
    temp_max: Mean,
    temp_min: Mean,
    spread: Mean,
    spread_max: f64,
    temp_delta_max: f64,
    soc_deviation: Mean,
    frames: u32,
    alarm: bool,
}

impl Default for DayAccumulator {
    fn default() -> Self {
        DayAccumulator {
            pack_voltage: Mean::default(),
            pack_current: Mean::default(),
            cell_max: Mean::default(),
            cell_min: Mean::default(),
            temp_max: Mean::default(),
            temp_min: Mean::default(),
            spread: Mean::default(),
            spread_max: f64::NAN,
            temp_delta_max: f64::NAN,
            soc_deviation: Mean::default(),
            frames: 0,
            alarm: false,
        }
    }
}

impl DayAccumulator {
    #[inline]
    pub fn push(&mut self, frame: &FrameRef<'_>, f: &FrameFeatures) {
        self.pack_voltage.add(frame.pack_voltage);
        self.pack_current.add(frame.pack_current);
        self.cell_max.add(f.cell_v_max);
        self.cell_min.add(f.cell_v_min);
        self.temp_max.add(f.temp_max);
        self.temp_min.add(f.temp_min);
        self.spread.add(f.cell_v_spread);
        self.spread_max = nan_max(self.spread_max, f.cell_v_spread);
        self.temp_delta_max = nan_max(self.temp_delta_max, f.temp_delta);
        self.soc_deviation.add(f.soc_deviation);
        self.frames += 1;
        self.alarm |= f.consistency_alarm;
    }

    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// The daily row of the accumulated frames; a day without frames gives
    /// [`DailyRow::empty`].
    pub fn finish(&self, vin: &str, date: NaiveDate) -> DailyRow {
        if self.frames == 0 {
            return DailyRow::empty(vin, date);
        }
        let values = [
            self.pack_voltage.get(),
            self.pack_current.get(),
            self.cell_max.get(),
            self.cell_min.get(),
            self.temp_max.get(),
            self.temp_min.get(),
            self.spread.get(),
            self.spread_max,
            self.temp_delta_max,
            self.soc_deviation.get(),
            self.frames as f64,
        ];
        DailyRow {
            vin: vin.to_owned(),
            date,
            values,
            label: if self.alarm { 1.0 } else { 0.0 },
        }
    }
}

/// Streams one vehicle's frames, in time order, into dense daily rows.
#[derive(Debug, Clone)]
pub struct VehicleAggregator {
    vin: String,
    config: DailyConfig,
    current_day: Option<i64>,
    first_day: Option<i64>,
    current: DayAccumulator,
    last: Option<(i64, u64)>,
    rows: Vec<DailyRow>,
}

impl VehicleAggregator {
    pub fn new(vin: &str, config: DailyConfig) -> Self {
        VehicleAggregator {
            vin: vin.to_owned(),
            config,
            current_day: None,
            first_day: None,
            current: DayAccumulator::default(),
            last: None,
            rows: Vec::new(),
        }
    }

    pub fn vin(&self) -> &str {
        &self.vin
    }

    /// Adds a frame. `line` is where it came from (for error messages). Frames must arrive
    /// in strictly increasing time order: an equal timestamp is a
    /// [`BmsError::DuplicateFrame`], an older one [`BmsError::OutOfOrder`], and the
    /// aggregator is left unchanged.
    pub fn push(&mut self, frame: &FrameRef<'_>, line: u64) -> Result<()> {
        debug_assert_eq!(frame.vin, self.vin);
        frame.validate()?;
        if let Some((prev, prev_line)) = self.last {
            if frame.timestamp_ms == prev {
                return Err(BmsError::DuplicateFrame {
                    file: None,
                    vin: self.vin.clone(),
                    timestamp_ms: prev,
                    first_line: prev_line,
                    second_line: line,
                });
            }
            if frame.timestamp_ms < prev {
                return Err(BmsError::OutOfOrder {
                    vin: self.vin.clone(),
                    timestamp_ms: frame.timestamp_ms,
                    previous_ms: prev,
                });
            }
        }
        let day = self.config.utc_offset.day_number(frame.timestamp_ms);
        if self.current_day != Some(day) && date_of_day(day).is_none() {
            return Err(BmsError::parse(
                Location::default().line(line),
                format!(
                    "timestamp {} ms is outside the supported calendar",
                    frame.timestamp_ms
                ),
            ));
        }
        let first_day = *self.first_day.get_or_insert(day);
        if let Err(reason) = check_span(&self.vin, first_day, day) {
            return Err(BmsError::parse(Location::default().line(line), reason));
        }
        let features = frame_features(frame, &self.config.features);
        match self.current_day {
            Some(d) if d == day => {}
            Some(d) => {
                self.close_day(d);
                for gap in d + 1..day {
                    let date = date_of_day(gap).expect("between two valid days");
                    self.rows.push(DailyRow::empty(&self.vin, date));
                }
                self.current_day = Some(day);
            }
            None => self.current_day = Some(day),
        }
        self.current.push(frame, &features);
        self.last = Some((frame.timestamp_ms, line));
        Ok(())
    }

    fn close_day(&mut self, day: i64) {
        let date = date_of_day(day).expect("checked when the day opened");
        self.rows.push(self.current.finish(&self.vin, date));
        self.current = DayAccumulator::default();
    }

    /// Rows of the days completed so far (the current day is still open).
    pub fn completed_rows(&self) -> &[DailyRow] {
        &self.rows
    }

    /// Closes the current day and returns all rows, dense from the first to the last day.
    pub fn finish(mut self) -> Vec<DailyRow> {
        if let Some(d) = self.current_day {
            self.close_day(d);
        }
        self.rows
    }
}

/// Aggregates a collection of frames (any order, any number of vehicles) into a daily
/// table sorted by VIN then date. Two frames of one vehicle with the same timestamp are an
/// error naming both source lines; `file` is used in error messages.
pub fn aggregate(frames: &Frames, config: &DailyConfig, file: Option<&Path>) -> Result<DailyTable> {
    aggregate_with_mode(frames, config, file, crate::io::ReadMode::Strict).map(|(t, _)| t)
}

/// [`aggregate`] of the frames a reader read, in the reader's `mode`: in
/// [`ReadMode::Lenient`](crate::io::ReadMode) a frame with the same (vin, timestamp) as an
/// earlier one is set aside as a reject of its line (the first one is kept), counted in
/// `report` like the reader's own rejects (in line order), instead of failing the run.
pub fn aggregate_report(
    report: &mut crate::io::ReadReport<Frames>,
    config: &DailyConfig,
    file: Option<&Path>,
    mode: crate::io::ReadMode,
) -> Result<DailyTable> {
    let (table, duplicates) = aggregate_with_mode(&report.data, config, file, mode)?;
    report.accepted -= duplicates.len() as u64;
    report.rejects.extend(duplicates);
    report.rejects.sort_by_key(|r| r.line);
    Ok(table)
}

fn aggregate_with_mode(
    frames: &Frames,
    config: &DailyConfig,
    file: Option<&Path>,
    mode: crate::io::ReadMode,
) -> Result<(DailyTable, Vec<crate::io::Reject>)> {
    let mut sink = crate::io::RejectSink::new(mode);
    let order = frames.sorted_order();
    let mut rows = Vec::new();
    let mut current: Option<VehicleAggregator> = None;
    let with_file = |e: BmsError| match e {
        BmsError::DuplicateFrame {
            vin,
            timestamp_ms,
            first_line,
            second_line,
            ..
        } => BmsError::DuplicateFrame {
            file: file.map(Path::to_path_buf),
            vin,
            timestamp_ms,
            first_line: first_line.min(second_line),
            second_line: first_line.max(second_line),
        },
        BmsError::Parse {
            mut location,
            reason,
        } => {
            location.file = file.map(Path::to_path_buf);
            BmsError::Parse { location, reason }
        }
        other => other,
    };
    for i in order {
        let frame = frames.get(i);
        if current.as_ref().is_none_or(|a| a.vin() != frame.vin) {
            if let Some(done) = current.take() {
                rows.extend(done.finish());
            }
            current = Some(VehicleAggregator::new(frame.vin, config.clone()));
        }
        let agg = current.as_mut().expect("set above");
        match agg.push(&frame, frames.line(i)).map_err(with_file) {
            Ok(()) => {}
            // The aggregator is unchanged: the frame is left out.
            Err(e @ BmsError::DuplicateFrame { .. }) => sink.reject(e)?,
            Err(e) => return Err(e),
        }
    }
    if let Some(done) = current {
        rows.extend(done.finish());
    }
    Ok((DailyTable { rows }, sink.rejects))
}

/// Aggregates frames of many vehicles arriving interleaved, each vehicle in time order.
/// Memory holds one open day per vehicle plus the finished rows.
#[derive(Debug, Clone, Default)]
pub struct DailyAggregator {
    config: DailyConfig,
    vehicles: HashMap<String, VehicleAggregator>,
}

impl DailyAggregator {
    pub fn new(config: DailyConfig) -> Self {
        DailyAggregator {
            config,
            vehicles: HashMap::new(),
        }
    }

    pub fn push(&mut self, frame: &FrameRef<'_>, line: u64) -> Result<()> {
        if let Some(agg) = self.vehicles.get_mut(frame.vin) {
            return agg.push(frame, line);
        }
        let mut agg = VehicleAggregator::new(frame.vin, self.config.clone());
        agg.push(frame, line)?;
        self.vehicles.insert(frame.vin.to_owned(), agg);
        Ok(())
    }

    /// All rows, sorted by VIN then date.
    pub fn finish(self) -> DailyTable {
        let mut vehicles: Vec<VehicleAggregator> = self.vehicles.into_values().collect();
        vehicles.sort_by(|a, b| a.vin.cmp(&b.vin));
        DailyTable {
            rows: vehicles.into_iter().flat_map(|v| v.finish()).collect(),
        }
    }
}
