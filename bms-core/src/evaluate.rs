//! Predictions measured against what the BMS did (SPEC §9).
//!
//! Two views of the same scores:
//!
//! - **window metrics** — every scored window against its label (an alarm day within the
//!   horizon): ROC AUC, average precision, and precision / recall / F1 at the threshold;
//! - **event metrics** — per vehicle, the way an OEM decides: for each vehicle that alarms,
//!   the *lead time* (days from the first window at or above the threshold to the first
//!   alarm day; negative when the first warning came after the alarm, absent when none
//!   came), detection rates at ≥ 1, ≥ 3 and ≥ 7 days of warning; for the vehicles that never
//!   alarm, false-alarm vehicles per 100 and false-alarm days per 1,000 vehicle-days.
//!
//! Labels come from a daily table (its `Label` column: every alarm day known), from the
//! simulator's truth file (each vehicle's first alarm day only) or from labelled windows
//! (`bms windows --labels`: window metrics only). No I/O here: callers read the files.
//!
//! ```
//! use bms_core::evaluate::{AlarmHistory, EvalConfig, Scored, evaluate};
//! let d = |s: &str| s.parse().unwrap();
//! // V1 alarms on 2024-01-10; V2 never does.
//! let labels = AlarmHistory::from_first_alarms([("V1", Some(d("2024-01-10"))), ("V2", None)])?;
//! let preds = [
//!     Scored { vin: "V1", date: d("2024-01-02"), prob: 0.1 },
//!     Scored { vin: "V1", date: d("2024-01-03"), prob: 0.8 }, // warns 7 days ahead
//!     Scored { vin: "V2", date: d("2024-01-02"), prob: 0.2 },
//!     Scored { vin: "V2", date: d("2024-01-03"), prob: 0.6 }, // a false alarm
//! ];
//! let e = evaluate(&preds, &labels, &EvalConfig { threshold: 0.5, horizon: 14 })?;
//! let events = e.events.as_ref().unwrap();
//! assert_eq!(e.vehicles[0].lead_days, Some(7));
//! assert_eq!(events.detection_rate_7d, Some(1.0));
//! assert_eq!(events.false_alarm_vehicles_per_100, Some(100.0));
//! # Ok::<(), bms_core::BmsError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::NaiveDate;
use serde::Serialize;

use crate::daily::DailyTable;
use crate::error::{BmsError, Location, Result};
use crate::io::{LineReader, parse_date};

/// One scored window: the vehicle, the window's date (the first day of its horizon) and
/// the predicted probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored<'a> {
    pub vin: &'a str,
    pub date: NaiveDate,
    pub prob: f32,
}

/// What an evaluation needs besides the scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalConfig {
    /// A window alerts when its probability is at or above this.
    pub threshold: f32,
    /// Days a window's label looks ahead (the model's `bms.horizon_days`).
    pub horizon: u32,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            threshold: 0.5,
            horizon: 14,
        }
    }
}

/// Where the labels came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    /// A daily table's `Label` column: every alarm day.
    Daily,
    /// Each vehicle's first alarm day (the simulator's truth file).
    FirstAlarms,
    /// One label per window (`bms windows --labels`).
    Windows,
}

#[derive(Debug, Clone, PartialEq)]
struct VehicleAlarms {
    /// Sorted alarm days (all of them for daily labels, the first only for truth).
    alarm_days: Vec<NaiveDate>,
    /// Daily labels: the vehicle's last row. Windows dated later have no label.
    last_day: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq)]
enum Labels {
    Vehicles(BTreeMap<String, VehicleAlarms>),
    Windows(HashMap<(String, NaiveDate), bool>),
}

/// The labels an evaluation compares the scores with.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmHistory {
    source: LabelSource,
    labels: Labels,
}

impl AlarmHistory {
    /// Every alarm day of a daily table (`Label` 1.0; `nan` counts as no alarm, as for
    /// window labels). Each VIN of the table is a labelled vehicle.
    pub fn from_daily(table: &DailyTable) -> AlarmHistory {
        let mut map: BTreeMap<String, VehicleAlarms> = BTreeMap::new();
        for row in &table.rows {
            let v = map.entry(row.vin.clone()).or_insert(VehicleAlarms {
                alarm_days: Vec::new(),
                last_day: None,
            });
            if row.label == 1.0 {
                v.alarm_days.push(row.date);
            }
            v.last_day = v.last_day.max(Some(row.date));
        }
        for v in map.values_mut() {
            v.alarm_days.sort_unstable();
            v.alarm_days.dedup();
        }
        AlarmHistory {
            source: LabelSource::Daily,
            labels: Labels::Vehicles(map),
        }
    }

    /// Each vehicle's first alarm day (`None`: never alarms). A VIN given twice is an error.
    pub fn from_first_alarms<S: AsRef<str>>(
        vehicles: impl IntoIterator<Item = (S, Option<NaiveDate>)>,
    ) -> Result<AlarmHistory> {
        let mut map = BTreeMap::new();
        for (vin, first) in vehicles {
            let vin = vin.as_ref();
            let alarms = VehicleAlarms {
                alarm_days: first.into_iter().collect(),
                last_day: None,
            };
            if map.insert(vin.to_owned(), alarms).is_some() {
                return Err(BmsError::invalid(
                    "labels",
                    format!("VIN {vin} is given twice"),
                ));
            }
        }
        Ok(AlarmHistory {
            source: LabelSource::FirstAlarms,
            labels: Labels::Vehicles(map),
        })
    }

    /// The simulator's truth file (`bms simulate --truth`): columns found by name, `vin`
    /// and `first_alarm_date` (empty: never alarms) required, others ignored. Errors name
    /// the file, line and column; a VIN on two lines names both.
    pub fn from_truth_csv<R: std::io::BufRead>(
        reader: R,
        file: Option<&Path>,
    ) -> Result<AlarmHistory> {
        let mut rdr = LineReader::new(reader, file);
        let mut cols: Option<(usize, usize)> = None;
        let mut first_alarms: Vec<(String, Option<NaiveDate>)> = Vec::new();
        let mut lines: HashMap<String, u64> = HashMap::new();
        let loc = || Location::new(file.map(Path::to_path_buf));
        while let Some(rec) = rdr.next_record()? {
            let rec = rec?;
            let Some((vin_col, alarm_col)) = cols else {
                let names: Vec<String> = rec
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).trim().to_owned())
                    .collect();
                let find = |name: &str| {
                    names
                        .iter()
                        .position(|n| n == name)
                        .ok_or_else(|| BmsError::Header {
                            file: file.map(Path::to_path_buf),
                            expected: format!("a truth file with a column '{name}'"),
                            found: format!("'{}'", names.join(",")),
                        })
                };
                cols = Some((find("vin")?, find("first_alarm_date")?));
                continue;
            };
            let line = rec.line;
            let need = vin_col.max(alarm_col) + 1;
            if rec.len() < need {
                return Err(BmsError::parse(
                    loc().line(line),
                    format!("{} fields, the header has at least {need}", rec.len()),
                ));
            }
            let vin = String::from_utf8_lossy(rec.get(vin_col)).trim().to_owned();
            if vin.is_empty() {
                return Err(BmsError::parse(
                    loc().line(line).column(vin_col, Some("vin")),
                    "empty VIN",
                ));
            }
            let text = rec.get(alarm_col).trim_ascii();
            let first = if text.is_empty() {
                None
            } else {
                Some(parse_date(text).map_err(|r| {
                    BmsError::parse(
                        loc().line(line).column(alarm_col, Some("first_alarm_date")),
                        r,
                    )
                })?)
            };
            if let Some(prev) = lines.insert(vin.clone(), line) {
                return Err(BmsError::parse(
                    loc().line(line),
                    format!("VIN {vin} again (first on line {prev})"),
                ));
            }
            first_alarms.push((vin, first));
        }
        if cols.is_none() {
            return Err(BmsError::Header {
                file: file.map(Path::to_path_buf),
                expected: "a truth file with columns 'vin' and 'first_alarm_date'".into(),
                found: "an empty file".into(),
            });
        }
        Self::from_first_alarms(first_alarms)
    }

    /// One label per window (`true`: an alarm day within the window's horizon). A window
    /// given twice is an error.
    pub fn from_windows<S: AsRef<str>>(
        windows: impl IntoIterator<Item = (S, NaiveDate, bool)>,
    ) -> Result<AlarmHistory> {
        let mut map = HashMap::new();
        for (vin, date, label) in windows {
            let vin = vin.as_ref();
            if map.insert((vin.to_owned(), date), label).is_some() {
                return Err(BmsError::invalid(
                    "labels",
                    format!("the window of VIN {vin} on {date} is labelled twice"),
                ));
            }
        }
        Ok(AlarmHistory {
            source: LabelSource::Windows,
            labels: Labels::Windows(map),
        })
    }

    /// Labelled windows as `bms windows --labels` writes them (SPEC §6 lines ending with
    /// the label): the VIN is the first field, the date the second, the label the last
    /// (`0`/`1`, `0.0`/`1.0`). Errors name the file, line and field.
    pub fn from_labelled_windows_csv<R: std::io::BufRead>(
        reader: R,
        file: Option<&Path>,
    ) -> Result<AlarmHistory> {
        let mut rdr = LineReader::new(reader, file);
        let mut windows: Vec<(String, NaiveDate, bool)> = Vec::new();
        let mut lines: HashMap<(String, NaiveDate), u64> = HashMap::new();
        let loc = || Location::new(file.map(Path::to_path_buf));
        while let Some(rec) = rdr.next_record()? {
            let rec = rec?;
            let line = rec.line;
            if rec.len() < 4 {
                return Err(BmsError::parse(
                    loc().line(line),
                    format!(
                        "{} fields: a labelled window is VIN, date, features and the label",
                        rec.len()
                    ),
                ));
            }
            let vin = String::from_utf8_lossy(rec.get(0)).trim().to_owned();
            let date = parse_date(rec.get(1))
                .map_err(|r| BmsError::parse(loc().line(line).column(1, Some("Date")), r))?;
            let last = rec.len() - 1;
            let label = match crate::io::parse_f64(rec.get(last)) {
                Ok(1.0) => true,
                Ok(0.0) => false,
                Ok(v) => {
                    return Err(BmsError::parse(
                        loc().line(line).column(last, Some("label")),
                        format!("label {v}: must be 0 or 1 (is this file labelled?)"),
                    ));
                }
                Err(r) => {
                    return Err(BmsError::parse(
                        loc().line(line).column(last, Some("label")),
                        r,
                    ));
                }
            };
            if let Some(prev) = lines.insert((vin.clone(), date), line) {
                return Err(BmsError::parse(
                    loc().line(line),
                    format!("the window of VIN {vin} on {date} again (first on line {prev})"),
                ));
            }
            windows.push((vin, date, label));
        }
        Self::from_windows(windows)
    }

    /// The alarm days the labels know of a vehicle, sorted (daily labels: all of them;
    /// truth: the first; window labels: none).
    pub fn alarm_days(&self, vin: &str) -> &[NaiveDate] {
        match &self.labels {
            Labels::Vehicles(m) => m.get(vin).map_or(&[], |v| v.alarm_days.as_slice()),
            Labels::Windows(_) => &[],
        }
    }

    pub fn source(&self) -> LabelSource {
        self.source
    }

    /// Labelled vehicles (for window labels, the distinct VINs).
    pub fn vehicles(&self) -> usize {
        match &self.labels {
            Labels::Vehicles(m) => m.len(),
            Labels::Windows(m) => {
                let mut vins: Vec<&str> = m.keys().map(|k| k.0.as_str()).collect();
                vins.sort_unstable();
                vins.dedup();
                vins.len()
            }
        }
    }
}

/// Reads scored windows from CSV with a header naming `vin`, `date` and
/// `predicted_prob` (any order, other columns ignored): `bms predict`'s standard output.
/// Errors name the file, line and column.
pub fn read_scored_csv<R: std::io::BufRead>(
    reader: R,
    file: Option<&Path>,
) -> Result<Vec<(String, NaiveDate, f32)>> {
    let mut rdr = LineReader::new(reader, file);
    let mut cols: Option<[usize; 3]> = None;
    let mut out = Vec::new();
    let loc = || Location::new(file.map(Path::to_path_buf));
    while let Some(rec) = rdr.next_record()? {
        let rec = rec?;
        let Some([v, d, p]) = cols else {
            let names: Vec<String> = rec
                .iter()
                .map(|f| String::from_utf8_lossy(f).trim().to_owned())
                .collect();
            let find = |name: &str| {
                names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| BmsError::Header {
                        file: file.map(Path::to_path_buf),
                        expected: "predictions with columns 'vin', 'date' and 'predicted_prob'"
                            .into(),
                        found: format!("'{}'", names.join(",")),
                    })
            };
            cols = Some([find("vin")?, find("date")?, find("predicted_prob")?]);
            continue;
        };
        let line = rec.line;
        let need = v.max(d).max(p) + 1;
        if rec.len() < need {
            return Err(BmsError::parse(
                loc().line(line),
                format!("{} fields, the header has at least {need}", rec.len()),
            ));
        }
        let vin = String::from_utf8_lossy(rec.get(v)).trim().to_owned();
        let date = parse_date(rec.get(d))
            .map_err(|r| BmsError::parse(loc().line(line).column(d, Some("date")), r))?;
        let prob = crate::io::parse_f64(rec.get(p))
            .and_then(|x| {
                if (0.0..=1.0).contains(&x) {
                    Ok(x as f32)
                } else {
                    Err(format!("{x} is not a probability (0 to 1)"))
                }
            })
            .map_err(|r| BmsError::parse(loc().line(line).column(p, Some("predicted_prob")), r))?;
        out.push((vin, date, prob));
    }
    if cols.is_none() {
        return Err(BmsError::Header {
            file: file.map(Path::to_path_buf),
            expected: "predictions with columns 'vin', 'date' and 'predicted_prob'".into(),
            found: "an empty file".into(),
        });
    }
    Ok(out)
}

/// Scores against window labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowMetrics {
    /// Windows with a label.
    pub windows: u64,
    /// Of them, labelled 1.
    pub positives: u64,
    /// Windows at or above the threshold.
    pub alerts: u64,
    /// Area under the ROC curve (tied scores count one half); `None` with one class only.
    pub roc_auc: Option<f64>,
    /// Average precision, Σ (Rₙ − Rₙ₋₁) Pₙ over the distinct scores from the highest
    /// (scikit-learn's `average_precision_score`); `None` without positives.
    pub average_precision: Option<f64>,
    /// Alerts labelled 1, of all alerts; `None` without alerts.
    pub precision: Option<f64>,
    /// Positives that alerted, of all positives; `None` without positives.
    pub recall: Option<f64>,
    /// 2·TP / (2·TP + FP + FN): the harmonic mean of precision and recall, 0 when nothing
    /// hit; `None` without positives and alerts.
    pub f1: Option<f64>,
}

/// The window metrics of `(probability, label)` pairs at `threshold`.
pub fn window_metrics(pairs: &[(f32, bool)], threshold: f32) -> WindowMetrics {
    let windows = pairs.len() as u64;
    let positives = pairs.iter().filter(|p| p.1).count() as u64;
    let negatives = windows - positives;
    let alerts = pairs.iter().filter(|p| p.0 >= threshold).count() as u64;
    let hits = pairs.iter().filter(|p| p.0 >= threshold && p.1).count() as u64;
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);

    // Descending scores, grouped by equal score: each group is one threshold.
    let mut sorted: Vec<(f32, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (p, n) = (positives as f64, negatives as f64);
    let (mut tp, mut fp) = (0u64, 0u64);
    let (mut auc, mut ap, mut last_recall) = (0.0f64, 0.0f64, 0.0f64);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        let (mut gtp, mut gfp) = (0u64, 0u64);
        while j < sorted.len() && sorted[j].0.total_cmp(&sorted[i].0).is_eq() {
            if sorted[j].1 {
                gtp += 1;
            } else {
                gfp += 1;
            }
            j += 1;
        }
        // ROC: the negatives of this group beat (tie) the positives above (of it).
        auc += gfp as f64 * (tp as f64 + gtp as f64 / 2.0);
        tp += gtp;
        fp += gfp;
        if positives > 0 {
            let recall = tp as f64 / p;
            ap += (recall - last_recall) * (tp as f64 / (tp + fp) as f64);
            last_recall = recall;
        }
        i = j;
    }
    let precision = ratio(hits, alerts);
    let recall = ratio(hits, positives);
    // 2·TP / (2·TP + FP + FN): the harmonic mean where both are defined, 0 when there
    // are positives or alerts but no hit (as scikit-learn has it).
    let (fp_at, fn_at) = (alerts - hits, positives - hits);
    let f1 = ratio(2 * hits, 2 * hits + fp_at + fn_at);
    WindowMetrics {
        windows,
        positives,
        alerts,
        roc_auc: (positives > 0 && negatives > 0).then(|| auc / (p * n)),
        average_precision: (positives > 0).then_some(ap),
        precision,
        recall,
        f1,
    }
}

/// One vehicle's scores against its alarms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleOutcome {
    pub vin: String,
    /// Scored windows.
    pub windows: u64,
    pub first_window: NaiveDate,
    pub last_window: NaiveDate,
    /// Windows at or above the threshold.
    pub alerts: u64,
    pub max_prob: f32,
    /// The first day the vehicle alarmed; `None`: never (in the labels).
    pub first_alarm: Option<NaiveDate>,
    /// Alarm days known (daily labels: all; truth: the first).
    pub alarm_days: u64,
    /// The date of the first window at or above the threshold.
    pub first_alert: Option<NaiveDate>,
    /// `first_alarm − first_alert` in days (negative: the warning came late); `None` when
    /// the vehicle never alarmed or was never warned.
    pub lead_days: Option<i64>,
    /// The vehicle alarmed no earlier than its first scored window (a warning was possible).
    pub warnable: bool,
}

/// Lead-time bins of [`EventMetrics::lead_histogram`], in order.
pub const LEAD_BINS: [&str; 7] = ["never", "late", "0", "1-2", "3-6", "7-13", "14+"];

/// The bin of a lead time (`None`: never warned).
pub fn lead_bin(lead: Option<i64>) -> usize {
    match lead {
        None => 0,
        Some(l) if l < 0 => 1,
        Some(0) => 2,
        Some(1..=2) => 3,
        Some(3..=6) => 4,
        Some(7..=13) => 5,
        Some(_) => 6,
    }
}

/// One bin of the lead-time histogram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeadBin {
    /// One of [`LEAD_BINS`]: `never`, `late` (negative lead), `0`, `1-2`, … days.
    pub bin: String,
    pub vehicles: u64,
}

/// Per-vehicle figures over the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventMetrics {
    /// Scored vehicles that alarm.
    pub alarm_vehicles: u64,
    /// Of them, those whose first alarm is not before their first scored window.
    pub warnable_vehicles: u64,
    /// Alarm vehicles warned at least 1 / 3 / 7 days before their first alarm.
    pub detected_1d: u64,
    pub detected_3d: u64,
    pub detected_7d: u64,
    /// The same as shares of `alarm_vehicles`; `None` without alarm vehicles.
    pub detection_rate_1d: Option<f64>,
    pub detection_rate_3d: Option<f64>,
    pub detection_rate_7d: Option<f64>,
    /// Alarm vehicles never warned.
    pub missed: u64,
    /// Median lead time of the warned alarm vehicles (negative ones included).
    pub median_lead_days: Option<f64>,
    /// Alarm vehicles per bin of [`LEAD_BINS`], in that order.
    pub lead_histogram: Vec<LeadBin>,
    /// Scored vehicles that never alarm.
    pub healthy_vehicles: u64,
    /// Of them, those with at least one alert.
    pub false_alarm_vehicles: u64,
    pub false_alarm_vehicles_per_100: Option<f64>,
    /// Windows (vehicle-days) of the healthy vehicles, and how many alerted.
    pub healthy_windows: u64,
    pub false_alarm_windows: u64,
    pub false_alarm_days_per_1000: Option<f64>,
}

/// An evaluation: what was compared, the window and event metrics, each vehicle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub labels: LabelSource,
    pub threshold: f32,
    pub horizon: u32,
    /// Predictions given; every one is `evaluated`, `unmatched` or `unlabelled`.
    pub predictions: u64,
    /// Predictions of vehicles the labels do not have (left out of every figure).
    pub unmatched: u64,
    pub unmatched_vehicles: u64,
    /// Predictions of labelled vehicles whose window has no label: dated after the
    /// vehicle's last daily row, or (truth labels) after its first alarm, or (window
    /// labels) a window the labels do not list. They count in the event metrics.
    pub unlabelled: u64,
    pub window: WindowMetrics,
    /// Per-vehicle figures; `None` for window labels (they do not say when alarms happen).
    pub events: Option<EventMetrics>,
    /// Scored, labelled vehicles in VIN order (empty for window labels).
    pub vehicles: Vec<VehicleOutcome>,
}

/// Compares `predictions` with `labels`. Errors: a horizon of 0, a threshold that is not
/// a number, the same (VIN, date) predicted twice (never counted twice), or no prediction
/// of a labelled vehicle.
pub fn evaluate(
    predictions: &[Scored<'_>],
    labels: &AlarmHistory,
    config: &EvalConfig,
) -> Result<Evaluation> {
    if config.horizon == 0 {
        return Err(BmsError::invalid("horizon", "must be at least 1 day"));
    }
    if config.threshold.is_nan() {
        return Err(BmsError::invalid("threshold", "is not a number"));
    }
    let thr = config.threshold;
    let mut by_vin: BTreeMap<&str, Vec<(NaiveDate, f32)>> = BTreeMap::new();
    for p in predictions {
        if p.prob.is_nan() {
            return Err(BmsError::invalid(
                "predictions",
                format!("the probability of VIN {} on {} is NaN", p.vin, p.date),
            ));
        }
        by_vin.entry(p.vin).or_default().push((p.date, p.prob));
    }
    for (vin, days) in by_vin.iter_mut() {
        days.sort_by_key(|d| d.0);
        if let Some(w) = days.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(BmsError::invalid(
                "predictions",
                format!("VIN {vin} is predicted twice for {}", w[0].0),
            ));
        }
    }

    let mut pairs: Vec<(f32, bool)> = Vec::with_capacity(predictions.len());
    let (mut unmatched, mut unmatched_vehicles, mut unlabelled) = (0u64, 0u64, 0u64);
    let mut vehicles = Vec::new();
    let horizon = i64::from(config.horizon);
    match &labels.labels {
        Labels::Windows(map) => {
            for (vin, days) in &by_vin {
                let mut matched = false;
                for &(date, prob) in days {
                    match map.get(&((*vin).to_owned(), date)) {
                        Some(&label) => {
                            pairs.push((prob, label));
                            matched = true;
                        }
                        None => unlabelled += 1,
                    }
                }
                if !matched {
                    // A vehicle without any labelled window is not in the labels at all.
                    unlabelled -= days.len() as u64;
                    unmatched += days.len() as u64;
                    unmatched_vehicles += 1;
                }
            }
        }
        Labels::Vehicles(map) => {
            for (vin, days) in &by_vin {
                let Some(alarms) = map.get(*vin) else {
                    unmatched += days.len() as u64;
                    unmatched_vehicles += 1;
                    continue;
                };
                let first_alarm = alarms.alarm_days.first().copied();
                let mut k = 0; // first alarm day at or after the window's date
                for &(date, prob) in days {
                    let known = match labels.source {
                        LabelSource::Daily => alarms.last_day.is_some_and(|l| date <= l),
                        _ => first_alarm.is_none_or(|a| date <= a),
                    };
                    if !known {
                        unlabelled += 1;
                        continue;
                    }
                    while k < alarms.alarm_days.len() && alarms.alarm_days[k] < date {
                        k += 1;
                    }
                    let label = alarms
                        .alarm_days
                        .get(k)
                        .is_some_and(|a| (*a - date).num_days() < horizon);
                    pairs.push((prob, label));
                }
                let first_alert = days.iter().find(|d| d.1 >= thr).map(|d| d.0);
                let first_window = days[0].0;
                vehicles.push(VehicleOutcome {
                    vin: (*vin).to_owned(),
                    windows: days.len() as u64,
                    first_window,
                    last_window: days[days.len() - 1].0,
                    alerts: days.iter().filter(|d| d.1 >= thr).count() as u64,
                    max_prob: days.iter().map(|d| d.1).fold(f32::NEG_INFINITY, f32::max),
                    first_alarm,
                    alarm_days: alarms.alarm_days.len() as u64,
                    first_alert,
                    lead_days: first_alarm
                        .zip(first_alert)
                        .map(|(a, w)| (a - w).num_days()),
                    warnable: first_alarm.is_some_and(|a| a >= first_window),
                });
            }
        }
    }
    if pairs.is_empty() && vehicles.is_empty() {
        let first = by_vin.keys().next().copied().unwrap_or("(none)");
        return Err(BmsError::invalid(
            "labels",
            format!(
                "no prediction is of a labelled window or vehicle ({} predictions, first VIN \
                 {first}; the labels have {} vehicles)",
                predictions.len(),
                labels.vehicles()
            ),
        ));
    }
    let events = (labels.source != LabelSource::Windows).then(|| event_metrics(&vehicles));
    Ok(Evaluation {
        labels: labels.source,
        threshold: thr,
        horizon: config.horizon,
        predictions: predictions.len() as u64,
        unmatched,
        unmatched_vehicles,
        unlabelled,
        window: window_metrics(&pairs, thr),
        events,
        vehicles,
    })
}

fn event_metrics(vehicles: &[VehicleOutcome]) -> EventMetrics {
    let alarmed: Vec<&VehicleOutcome> = vehicles
        .iter()
        .filter(|v| v.first_alarm.is_some())
        .collect();
    let healthy: Vec<&VehicleOutcome> = vehicles
        .iter()
        .filter(|v| v.first_alarm.is_none())
        .collect();
    let detected = |k: i64| {
        alarmed
            .iter()
            .filter(|v| v.lead_days.is_some_and(|l| l >= k))
            .count() as u64
    };
    let share = |a: u64, b: usize, per: f64| (b > 0).then(|| per * a as f64 / b as f64);
    let (d1, d3, d7) = (detected(1), detected(3), detected(7));
    let mut leads: Vec<i64> = alarmed.iter().filter_map(|v| v.lead_days).collect();
    leads.sort_unstable();
    let median_lead_days = (!leads.is_empty()).then(|| {
        let m = leads.len() / 2;
        if leads.len() % 2 == 1 {
            leads[m] as f64
        } else {
            (leads[m - 1] + leads[m]) as f64 / 2.0
        }
    });
    let mut hist = [0u64; LEAD_BINS.len()];
    for v in &alarmed {
        hist[lead_bin(v.lead_days)] += 1;
    }
    let false_alarm_vehicles = healthy.iter().filter(|v| v.alerts > 0).count() as u64;
    let healthy_windows: u64 = healthy.iter().map(|v| v.windows).sum();
    let false_alarm_windows: u64 = healthy.iter().map(|v| v.alerts).sum();
    EventMetrics {
        alarm_vehicles: alarmed.len() as u64,
        warnable_vehicles: alarmed.iter().filter(|v| v.warnable).count() as u64,
        detected_1d: d1,
        detected_3d: d3,
        detected_7d: d7,
        detection_rate_1d: share(d1, alarmed.len(), 1.0),
        detection_rate_3d: share(d3, alarmed.len(), 1.0),
        detection_rate_7d: share(d7, alarmed.len(), 1.0),
        missed: alarmed.iter().filter(|v| v.first_alert.is_none()).count() as u64,
        median_lead_days,
        lead_histogram: LEAD_BINS
            .iter()
            .zip(hist)
            .map(|(b, n)| LeadBin {
                bin: (*b).to_owned(),
                vehicles: n,
            })
            .collect(),
        healthy_vehicles: healthy.len() as u64,
        false_alarm_vehicles,
        false_alarm_vehicles_per_100: share(false_alarm_vehicles, healthy.len(), 100.0),
        healthy_windows,
        false_alarm_windows,
        false_alarm_days_per_1000: (healthy_windows > 0)
            .then(|| 1000.0 * false_alarm_windows as f64 / healthy_windows as f64),
    }
}

#[cfg(test)]
mod tests;
