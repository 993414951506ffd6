//! `bms report`: one self-contained HTML page from a `bms predict --out DIR` directory.
//!
//! No scripts, no fonts, no external resources (a Content-Security-Policy forbids them):
//! fleet summary, the distribution of probabilities with the alarm threshold, the most
//! at-risk vehicles, and for each of them a daily SVG chart of cell-voltage spread,
//! temperature delta and predicted probability.
//!
//! The daily series come from the predictions themselves: the prediction for date `d`
//! carries its window's newest day (`d − 1`, feature suffix `_1`), so the spread of day
//! `d − 1` is `cell_max_voltage_1 − cell_min_voltage_1` (or `spread_mean_1` when the model
//! has it) and the temperature delta `max_temperature_1 − min_temperature_1` (or
//! `temp_delta_max_1`). A day the window filled with the fill value is a gap.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::NaiveDate;

use bms_batch::Summary;
use bms_batch::evaluate::{self, LabelFiles};
use bms_batch::store::parquet::read_predictions;
use bms_batch::store::{Prediction, SUMMARY_FILE};

/// Vehicles listed in the at-risk table.
pub const TABLE_ROWS: usize = 20;
/// Vehicles with a daily chart.
pub const CHARTS: usize = 8;

/// One day of one vehicle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayPoint {
    pub date: NaiveDate,
    pub prob: f32,
    pub alarm: bool,
    /// Cell-voltage spread of the window's newest day, millivolts (NaN: no data).
    pub spread_mv: f64,
    /// Max − min temperature of the window's newest day, °C (NaN: no data).
    pub temp_delta: f64,
}

/// A vehicle's predictions in date order, with its risk figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Vehicle {
    pub vin: String,
    pub days: Vec<DayPoint>,
    pub max_prob: f32,
    pub max_date: NaiveDate,
    pub alarm_days: usize,
    pub first_alarm: Option<NaiveDate>,
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct ReportData {
    pub model_id: String,
    pub threshold: f32,
    pub input: String,
    pub rows_read: u64,
    pub rows_rejected: u64,
    pub probs: Vec<f32>,
    /// Sorted by descending maximum probability, then VIN.
    pub vehicles: Vec<Vehicle>,
    /// With labels (`bms report DIR --daily/--truth/--windows`): the scores measured
    /// against them, and the BMS alarm days each chart marks.
    pub evaluation: Option<LabelledView>,
}

/// The evaluation section of the page.
#[derive(Debug, Clone)]
pub struct LabelledView {
    pub evaluation: bms_core::evaluate::Evaluation,
    /// Alarm days the labels know, per VIN.
    pub bms_alarms: BTreeMap<String, Vec<NaiveDate>>,
}

fn idx(names: &[String], name: &str) -> Option<usize> {
    names.iter().position(|n| n == name)
}

/// Builds the report's data from predictions and their feature names.
pub fn report_data(names: &[String], rows: &[Prediction], threshold: f32, fill: f64) -> ReportData {
    let get = |p: &Prediction, i: Option<usize>| -> f64 {
        match i.and_then(|i| p.features.get(i)) {
            Some(&v) if v.is_finite() && f64::from(v) != fill => f64::from(v),
            _ => f64::NAN,
        }
    };
    let spread_mean = idx(names, "spread_mean_1");
    let (cmax, cmin) = (
        idx(names, "cell_max_voltage_1"),
        idx(names, "cell_min_voltage_1"),
    );
    let delta = idx(names, "temp_delta_max_1");
    let (tmax, tmin) = (
        idx(names, "max_temperature_1"),
        idx(names, "min_temperature_1"),
    );
    let mut by_vin: BTreeMap<&str, Vec<DayPoint>> = BTreeMap::new();
    for p in rows {
        let spread = if spread_mean.is_some() {
            get(p, spread_mean)
        } else {
            get(p, cmax) - get(p, cmin)
        };
        let temp_delta = if delta.is_some() {
            get(p, delta)
        } else {
            get(p, tmax) - get(p, tmin)
        };
        by_vin.entry(&p.vin).or_default().push(DayPoint {
            date: p.date,
            prob: p.predicted_prob,
            alarm: p.alarm,
            spread_mv: spread * 1000.0,
            temp_delta,
        });
    }
    let mut vehicles: Vec<Vehicle> = by_vin
        .into_iter()
        .map(|(vin, mut days)| {
            days.sort_by_key(|d| d.date);
            let top = days
                .iter()
                .copied()
                .fold(None::<DayPoint>, |best, d| match best {
                    Some(b) if b.prob >= d.prob => Some(b),
                    _ => Some(d),
                })
                .expect("a vehicle has at least one prediction");
            Vehicle {
                vin: vin.to_owned(),
                max_prob: top.prob,
                max_date: top.date,
                alarm_days: days.iter().filter(|d| d.alarm).count(),
                first_alarm: days.iter().find(|d| d.alarm).map(|d| d.date),
                days,
            }
        })
        .collect();
    vehicles.sort_by(|a, b| {
        b.max_prob
            .total_cmp(&a.max_prob)
            .then_with(|| a.vin.cmp(&b.vin))
    });
    ReportData {
        model_id: rows.first().map(|r| r.model_id.clone()).unwrap_or_default(),
        threshold,
        input: String::new(),
        rows_read: rows.len() as u64,
        rows_rejected: 0,
        probs: rows.iter().map(|r| r.predicted_prob).collect(),
        vehicles,
        evaluation: None,
    }
}

/// Reads `DIR` (predictions and summary.json) and writes the page to `out` atomically,
/// with the evaluation section when `labels` name a label file. Returns the data shown.
pub fn write_report(dir: &Path, out: &Path, labels: &LabelFiles) -> Result<ReportData> {
    let (data, html) = report_page(dir, labels)?;
    let mut f = bms_core::io::AtomicFile::create(out)?;
    std::io::Write::write_all(f.file(), html.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    f.commit()?;
    bms_batch::sink::readable(out);
    Ok(data)
}

/// Reads `DIR` (predictions and summary.json) and, when `labels` name one, a label file:
/// the data shown and the page.
pub fn report_page(dir: &Path, labels: &LabelFiles) -> Result<(ReportData, String)> {
    let preds = read_predictions(dir)?;
    let summary = Summary::read(&dir.join(SUMMARY_FILE))?;
    let mut data = report_data(
        &preds.names,
        &preds.rows,
        summary.threshold,
        summary.fill_value,
    );
    if labels.daily.is_some() || labels.truth.is_some() || labels.windows.is_some() {
        let history = evaluate::read_labels(labels)?;
        let cfg = evaluate::config(None, None, None, Some(&summary))?;
        let scores: Vec<(String, NaiveDate, f32)> = preds
            .rows
            .iter()
            .map(|p| (p.vin.clone(), p.date, p.predicted_prob))
            .collect();
        let evaluation = evaluate::evaluate_scores(&scores, &history, &cfg)?;
        let bms_alarms = data
            .vehicles
            .iter()
            .map(|v| (v.vin.clone(), history.alarm_days(&v.vin).to_vec()))
            .collect();
        data.evaluation = Some(LabelledView {
            evaluation,
            bms_alarms,
        });
    }
    data.input = summary.input;
    data.rows_read = summary.rows_read;
    data.rows_rejected = summary.rows_rejected;
    let html = render(&data);
    Ok((data, html))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1040px;color:#1f2933;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d9e2ec;padding-bottom:4px}
.meta{color:#52606d;font-size:13px}.cards{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{border:1px solid #d9e2ec;border-radius:6px;padding:10px 14px;min-width:130px;background:#f5f7fa}
.card b{display:block;font-size:22px}.card span{font-size:12px;color:#52606d}
.card.alarm{background:#fff1f0;border-color:#f5a3a3}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #e4e7eb;text-align:left}
th{background:#f0f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.alarm td:first-child{border-left:4px solid #d64545}.vin{font-family:ui-monospace,'DejaVu Sans Mono',monospace}
svg{display:block;margin:6px 0 18px}svg text{font-size:11px;fill:#3e4c59}
.bar{fill:#627d98}.bar.hi{fill:#d64545}.thr{stroke:#d64545;stroke-width:2;stroke-dasharray:5 3}
.axis{stroke:#9aa5b1;stroke-width:1}.grid{stroke:#e4e7eb;stroke-width:1}
.s1{stroke:#2680c2;fill:none;stroke-width:1.6}.s2{stroke:#de911d;fill:none;stroke-width:1.6}.s3{stroke:#8719e0;fill:none;stroke-width:1.8}
.dot{fill:#d64545}.bmsalarm{stroke:#d64545;stroke-width:2}";

/// Renders the page.
pub fn render(d: &ReportData) -> String {
    let mut h = String::with_capacity(256 * 1024);
    let alarm_windows = d.probs.iter().filter(|&&p| p >= d.threshold).count();
    let alarm_vehicles = d.vehicles.iter().filter(|v| v.alarm_days > 0).count();
    let (first, last) = (
        d.vehicles
            .iter()
            .flat_map(|v| v.days.first())
            .map(|x| x.date)
            .min(),
        d.vehicles
            .iter()
            .flat_map(|v| v.days.last())
            .map(|x| x.date)
            .max(),
    );
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Battery consistency-alarm report</title><style>{CSS}</style></head><body>\n\
<h1>Battery consistency-alarm report</h1>\
<div class=\"meta\">model <b>{}</b> · alarm threshold {} · input {}{}</div>\n",
        esc(&d.model_id),
        d.threshold,
        esc(&d.input),
        match (first, last) {
            (Some(a), Some(b)) => format!(" · {a} to {b}"),
            _ => String::new(),
        }
    );
    h.push_str("<div class=\"cards\">");
    let card = |h: &mut String, v: String, label: &str, alarm: bool| {
        let _ = write!(
            h,
            "<div class=\"card{}\"><b>{v}</b><span>{label}</span></div>",
            if alarm { " alarm" } else { "" }
        );
    };
    card(&mut h, d.vehicles.len().to_string(), "vehicles", false);
    card(&mut h, d.probs.len().to_string(), "windows scored", false);
    card(
        &mut h,
        alarm_vehicles.to_string(),
        "vehicles with an alarm",
        alarm_vehicles > 0,
    );
    card(
        &mut h,
        alarm_windows.to_string(),
        "alarm windows",
        alarm_windows > 0,
    );
    card(&mut h, d.rows_read.to_string(), "input rows read", false);
    card(&mut h, d.rows_rejected.to_string(), "rows rejected", false);
    h.push_str("</div>\n");

    if let Some(view) = &d.evaluation {
        evaluation_section(&mut h, &view.evaluation);
    }

    h.push_str("<h2>Distribution of predicted probabilities</h2>");
    histogram(&mut h, &d.probs, d.threshold);

    let _ = write!(
        h,
        "<h2>Most at-risk vehicles</h2><table><thead><tr><th>#</th><th>VIN</th>\
<th>highest probability</th><th>on</th><th>latest probability</th><th>latest date</th>\
<th>alarm days</th><th>first alarm</th></tr></thead><tbody>"
    );
    for (i, v) in d.vehicles.iter().take(TABLE_ROWS).enumerate() {
        let latest = v.days.last().expect("at least one day");
        let name = if i < CHARTS {
            format!("<a href=\"#v{i}\">{}</a>", esc(&v.vin))
        } else {
            esc(&v.vin)
        };
        let _ = write!(
            h,
            "<tr{}><td class=\"num\">{}</td><td class=\"vin\">{name}</td><td class=\"num\">{:.3}</td>\
<td>{}</td><td class=\"num\">{:.3}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            if v.alarm_days > 0 {
                " class=\"alarm\""
            } else {
                ""
            },
            i + 1,
            v.max_prob,
            v.max_date,
            latest.prob,
            latest.date,
            v.alarm_days,
            v.first_alarm
                .map(|d| d.to_string())
                .unwrap_or_else(|| "–".into()),
        );
    }
    h.push_str("</tbody></table>\n");

    h.push_str(
        "<h2>Daily history of the most at-risk vehicles</h2>\
<div class=\"meta\">Each point is one day: the cell-voltage spread and temperature delta of \
the day before the prediction date (the newest day of the model's window), and the \
probability predicted for the next days. Gaps are days without data.</div>",
    );
    for (i, v) in d.vehicles.iter().take(CHARTS).enumerate() {
        let _ = write!(
            h,
            "<h3 id=\"v{i}\" class=\"vin\">{} — highest probability {:.3} on {}</h3>",
            esc(&v.vin),
            v.max_prob,
            v.max_date
        );
        let alarms = d
            .evaluation
            .as_ref()
            .and_then(|e| e.bms_alarms.get(&v.vin))
            .map_or(&[][..], Vec::as_slice);
        vehicle_chart(&mut h, v, d.threshold, alarms);
    }
    h.push_str("</body></html>\n");
    h
}

const W: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;

fn histogram(h: &mut String, probs: &[f32], threshold: f32) {
    const BINS: usize = 40;
    const HT: f64 = 220.0;
    let (top, bottom) = (16.0, HT - 34.0);
    let mut counts = [0usize; BINS];
    for &p in probs {
        if p.is_finite() {
            counts[((p.clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1)] += 1;
        }
    }
    let maxc = counts.iter().copied().max().unwrap_or(0).max(1);
    // Square-root scale: the few high-risk windows stay visible next to the many low ones.
    let y = |c: usize| bottom - (c as f64 / maxc as f64).sqrt() * (bottom - top);
    let x = |p: f64| LEFT + p * (W - LEFT - RIGHT);
    let _ = write!(
        h,
        "<svg width=\"{W}\" height=\"{HT}\" viewBox=\"0 0 {W} {HT}\" role=\"img\" aria-label=\"histogram of predicted probabilities\">"
    );
    for k in [0, maxc / 4, maxc / 2, maxc] {
        let yy = y(k);
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{k}</text>",
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    let bw = (W - LEFT - RIGHT) / BINS as f64;
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let lo = i as f64 / BINS as f64;
        let _ = write!(
            h,
            "<rect class=\"bar{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{:.3}–{:.3}: {c} windows</title></rect>",
            if lo + 1.0 / BINS as f64 > f64::from(threshold) {
                " hi"
            } else {
                ""
            },
            x(lo) + 1.0,
            y(c),
            bw - 2.0,
            bottom - y(c),
            lo,
            lo + 1.0 / BINS as f64
        );
    }
    let _ = write!(
        h,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{bottom}\" y2=\"{bottom}\"/>",
        W - RIGHT
    );
    for t in 0..=10 {
        let p = t as f64 / 10.0;
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{p:.1}</text>",
            x(p),
            bottom + 16.0
        );
    }
    let tx = x(f64::from(threshold));
    let _ = write!(
        h,
        "<line class=\"thr\" x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{}\" y2=\"{bottom}\"/>\
<text x=\"{:.1}\" y=\"{}\" fill=\"#d64545\">threshold {threshold}</text>\
<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">predicted probability (windows per bin, square-root scale)</text></svg>",
        top - 6.0,
        tx + 6.0,
        top + 6.0,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        HT - 2.0
    );
}

/// Polyline segments of the finite values, split at gaps.
fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &(x, y) in points {
        if y.is_finite() {
            out.last_mut().expect("non-empty").push((x, y));
        } else if !out.last().expect("non-empty").is_empty() {
            out.push(Vec::new());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| format!("{:.0} %", 100.0 * v))
}

fn fixed(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
}

/// Days of warning before the BMS alarm: cards, the lead-time histogram and the table of
/// the vehicles that alarm (SPEC §9).
fn evaluation_section(h: &mut String, e: &bms_core::evaluate::Evaluation) {
    let w = &e.window;
    h.push_str("<h2 id=\"evaluation\">Warning before the BMS alarm</h2>");
    let _ = write!(
        h,
        "<div class=\"meta\">Scores against the labels ({}): {} windows evaluated, {} \
without a label, {} of vehicles the labels do not have. Window ROC AUC {}, average \
precision {}; at threshold {}: precision {}, recall {}, F1 {}.</div>",
        match e.labels {
            bms_core::evaluate::LabelSource::Daily => "daily table, every alarm day",
            bms_core::evaluate::LabelSource::FirstAlarms => "truth file, first alarm days",
            bms_core::evaluate::LabelSource::Windows => "labelled windows",
        },
        w.windows,
        e.unlabelled,
        e.unmatched,
        fixed(w.roc_auc, 3),
        fixed(w.average_precision, 3),
        e.threshold,
        fixed(w.precision, 3),
        fixed(w.recall, 3),
        fixed(w.f1, 3)
    );
    let Some(ev) = &e.events else {
        return;
    };
    h.push_str("<div class=\"cards\">");
    for (value, label, alarm) in [
        (ev.alarm_vehicles.to_string(), "vehicles that alarm", false),
        (pct(ev.detection_rate_7d), "warned ≥ 7 days ahead", false),
        (pct(ev.detection_rate_1d), "warned ≥ 1 day ahead", false),
        (ev.missed.to_string(), "never warned", ev.missed > 0),
        (
            fixed(ev.false_alarm_vehicles_per_100, 1),
            "false-alarm vehicles per 100",
            ev.false_alarm_vehicles > 0,
        ),
        (
            fixed(ev.false_alarm_days_per_1000, 1),
            "false-alarm days per 1,000",
            false,
        ),
    ] {
        let _ = write!(
            h,
            "<div class=\"card{}\"><b>{value}</b><span>{label}</span></div>",
            if alarm { " alarm" } else { "" }
        );
    }
    h.push_str("</div>");
    h.push_str("<h3>Lead time: days from the first alert to the first alarm</h3>");
    lead_histogram(h, &ev.lead_histogram);
    h.push_str(
        "<table><thead><tr><th>VIN</th><th>first alarm</th><th>first alert</th>\
<th>lead (days)</th><th>alerts</th><th>highest probability</th></tr></thead><tbody>",
    );
    for v in e.vehicles.iter().filter(|v| v.first_alarm.is_some()) {
        let late = v.lead_days.is_none_or(|l| l < 1);
        let _ = write!(
            h,
            "<tr{}><td class=\"vin\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
<td class=\"num\">{}</td><td class=\"num\">{:.3}</td></tr>",
            if late { " class=\"alarm\"" } else { "" },
            esc(&v.vin),
            v.first_alarm.map(|d| d.to_string()).unwrap_or_default(),
            v.first_alert
                .map(|d| d.to_string())
                .unwrap_or_else(|| "never".into()),
            v.lead_days
                .map(|l| l.to_string())
                .unwrap_or_else(|| "–".into()),
            v.alerts,
            v.max_prob
        );
    }
    h.push_str("</tbody></table>\n");
}

fn lead_histogram(h: &mut String, bins: &[bms_core::evaluate::LeadBin]) {
    const HT: f64 = 180.0;
    let (top, bottom) = (16.0, HT - 34.0);
    let maxc = bins.iter().map(|b| b.vehicles).max().unwrap_or(0).max(1);
    let bw = (W - LEFT - RIGHT) / bins.len().max(1) as f64;
    let _ = write!(
        h,
        "<svg width=\"{W}\" height=\"{HT}\" viewBox=\"0 0 {W} {HT}\" role=\"img\" aria-label=\"lead-time histogram\">"
    );
    for (i, b) in bins.iter().enumerate() {
        let x = LEFT + i as f64 * bw;
        let bar = b.vehicles as f64 / maxc as f64 * (bottom - top);
        // Bins without a timely warning (never, late, same day) are drawn red.
        let hi = i < 3;
        let _ = write!(
            h,
            "<rect class=\"bar{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\"><title>{}: {} vehicles</title></rect>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            if hi { " hi" } else { "" },
            x + 4.0,
            bottom - bar,
            bw - 8.0,
            esc(&b.bin),
            b.vehicles,
            x + bw / 2.0,
            bottom - bar - 4.0,
            b.vehicles,
            x + bw / 2.0,
            bottom + 16.0,
            esc(&b.bin)
        );
    }
    let _ = write!(
        h,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{bottom}\" y2=\"{bottom}\"/>\
<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">vehicles that alarm, by days of warning</text></svg>",
        W - RIGHT,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        HT - 2.0
    );
}

fn vehicle_chart(h: &mut String, v: &Vehicle, threshold: f32, bms_alarms: &[NaiveDate]) {
    const PANEL: f64 = 92.0;
    const GAP: f64 = 26.0;
    let ht = 8.0 + 3.0 * (PANEL + GAP) + 14.0;
    let d0 = v.days.first().expect("a day").date;
    let d1 = v.days.last().expect("a day").date;
    let span = ((d1 - d0).num_days()).max(1) as f64;
    let x = |d: NaiveDate| LEFT + (d - d0).num_days() as f64 / span * (W - LEFT - RIGHT);
    let _ = write!(
        h,
        "<svg width=\"{W}\" height=\"{ht}\" viewBox=\"0 0 {W} {ht}\" role=\"img\" aria-label=\"daily chart of {}\">",
        esc(&v.vin)
    );
    // (label, line class, values, fixed y range)
    type Panel<'a> = (&'a str, &'a str, Vec<f64>, Option<(f64, f64)>);
    let panels: [Panel<'_>; 3] = [
        (
            "cell-voltage spread (mV)",
            "s1",
            v.days.iter().map(|d| d.spread_mv).collect(),
            None,
        ),
        (
            "temperature delta (°C)",
            "s2",
            v.days.iter().map(|d| d.temp_delta).collect(),
            None,
        ),
        (
            "predicted probability",
            "s3",
            v.days.iter().map(|d| f64::from(d.prob)).collect(),
            Some((0.0, 1.0)),
        ),
    ];
    for (k, (label, class, values, fixed)) in panels.iter().enumerate() {
        let top = 8.0 + k as f64 * (PANEL + GAP) + 14.0;
        let bottom = top + PANEL - 14.0;
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let (lo, hi) = match fixed {
            Some(r) => *r,
            None if finite.is_empty() => (0.0, 1.0),
            None => {
                let lo = finite
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
                    .min(0.0);
                let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (lo, if hi > lo { hi * 1.05 } else { lo + 1.0 })
            }
        };
        let y = |val: f64| bottom - (val - lo) / (hi - lo) * (bottom - top);
        let _ = write!(
            h,
            "<text x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">{label}</text>\
<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\"/>\
<line class=\"axis\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{bottom:.1}\" y2=\"{bottom:.1}\"/>\
<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            top - 4.0,
            W - RIGHT,
            LEFT - 6.0,
            top + 4.0,
            tick(hi),
            LEFT - 6.0,
            bottom + 4.0,
            tick(lo),
        );
        if fixed.is_some() {
            let ty = y(f64::from(threshold));
            let _ = write!(
                h,
                "<line class=\"thr\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\"/>\
<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#d64545\">threshold {threshold}</text>",
                W - RIGHT,
                W - RIGHT,
                ty - 3.0
            );
        }
        let pts: Vec<(f64, f64)> = v
            .days
            .iter()
            .zip(values)
            .map(|(d, &val)| (x(d.date), if val.is_finite() { y(val) } else { f64::NAN }))
            .collect();
        for seg in segments(&pts) {
            if seg.len() == 1 {
                let _ = write!(
                    h,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.8\" fill=\"currentColor\" class=\"{class}\"/>",
                    seg[0].0, seg[0].1
                );
                continue;
            }
            h.push_str("<polyline class=\"");
            h.push_str(class);
            h.push_str("\" points=\"");
            for (px, py) in seg {
                let _ = write!(h, "{px:.1},{py:.1} ");
            }
            h.push_str("\"/>");
        }
        if fixed.is_some() {
            // The BMS alarm days the labels know, as red ticks under the probability.
            for &a in bms_alarms.iter().filter(|&&a| a >= d0 && a <= d1) {
                let ax = x(a);
                let _ = write!(
                    h,
                    "<line class=\"bmsalarm\" x1=\"{ax:.1}\" x2=\"{ax:.1}\" y1=\"{:.1}\" y2=\"{bottom:.1}\"><title>BMS alarm {a}</title></line>",
                    bottom - 10.0
                );
            }
            for (d, (px, py)) in v.days.iter().zip(&pts) {
                if d.alarm && py.is_finite() {
                    let _ = write!(
                        h,
                        "<circle class=\"dot\" cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2.2\"/>"
                    );
                }
            }
        }
    }
    // Date ticks along the bottom: first day, month starts, last day.
    let by = ht - 6.0;
    let mut ticks = vec![d0];
    let mut d = d0;
    while d < d1 {
        d = d.succ_opt().expect("a next day");
        if chrono::Datelike::day(&d) == 1 && (d - d0).num_days() > 6 && (d1 - d).num_days() > 6 {
            ticks.push(d);
        }
    }
    if d1 != d0 {
        ticks.push(d1);
    }
    for t in ticks {
        let anchor = match t {
            t if t == d0 => "start",
            t if t == d1 => "end",
            _ => "middle",
        };
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{by:.1}\" text-anchor=\"{anchor}\">{t}</text>",
            x(t)
        );
    }
    h.push_str("</svg>");
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
