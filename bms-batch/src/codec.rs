//! Request bodies in, response bodies out: pure functions, no I/O.
//!
//! Numbers are read with [`bms_core::io::parse_f32`] ([`bms_core::io::parse_f64`]'s value
//! rounded to f32: decimal or scientific, `nan` or an empty field as NaN, infinities
//! refused) and handed to the model, exactly as
//! `bms predict` reads the batch CSV, so both give the same probabilities for the same
//! rows. Probabilities are written as the shortest decimal that reads back to the same f32
//! (what `bms predict` writes).

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bms_core::io::{check_range, parse_f32, parse_f64};
use bms_core::model::Model;
use ndarray::ArrayView2;

use crate::store::Prediction;
use chrono::NaiveDate;
use serde_json::Value;

/// A body the server cannot score: the message names the line (CSV) or the instance and
/// value (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBody(pub String);

/// Rows parsed from a request, row-major `[n, width]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    pub n: usize,
    pub x: Vec<f32>,
    /// (row, VIN, Date) of the rows that came as reference batch lines.
    pub keys: Vec<(usize, String, NaiveDate)>,
}

impl Rows {
    /// The predictions of the rows that came as reference batch lines, `probs` their
    /// scores (one per row), `width` values per row.
    pub fn keyed_predictions(
        &self,
        probs: &[f32],
        width: usize,
        threshold: f32,
        model_id: &str,
    ) -> Vec<Prediction> {
        self.keys
            .iter()
            .map(|(i, vin, date)| {
                let x = self.x[i * width..(i + 1) * width].to_vec();
                Prediction::new(vin, *date, probs[*i], threshold, model_id, x)
            })
            .collect()
    }
}

/// Refuses rows that hold a missing (NaN) value when the model does not handle missing
/// values (SPEC §7), naming the first such row (1-based, in body order) and value.
pub fn check_missing(model: &Model, rows: &Rows) -> Result<(), BadBody> {
    let Some(why) = model.missing_values_refusal() else {
        return Ok(());
    };
    let width = model.input_width().max(1);
    match rows.x.iter().position(|v| v.is_nan()) {
        None => Ok(()),
        Some(at) => Err(bad(format!(
            "row {}, value {}: a missing value (nan or null), and {why}",
            at / width + 1,
            at % width + 1
        ))),
    }
}

/// Scores `rows` with `model`, a panic of the model caught. `Err` is the message of a
/// server-side failure (answered 500).
pub fn score(model: &Model, rows: &Rows) -> Result<Vec<f32>, String> {
    let x = ArrayView2::from_shape((rows.n, model.input_width()), &rows.x)
        .map_err(|e| format!("internal error: {e}"))?;
    match catch_unwind(AssertUnwindSafe(|| model.predict(x))) {
        Ok(Ok(p)) => Ok(p.to_vec()),
        Ok(Err(e)) => Err(format!("model failed: {e}")),
        Err(_) => Err("model panicked while scoring".to_owned()),
    }
}

/// The request and response formats `/invocations` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    pub fn mime(self) -> &'static str {
        match self {
            Format::Csv => "text/csv",
            Format::Json => "application/json",
        }
    }
}

/// The media type of a `Content-Type` value without parameters, lower-cased.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The body format named by `Content-Type`; absent means CSV (what SageMaker's built-in
/// containers assume). `Err` carries the unsupported media type.
pub fn content_format(content_type: Option<&str>) -> Result<Format, String> {
    let Some(ct) = content_type else {
        return Ok(Format::Csv);
    };
    match media_type(ct).as_str() {
        "" | "text/csv" => Ok(Format::Csv),
        "application/json" => Ok(Format::Json),
        other => Err(other.to_owned()),
    }
}

/// The response format chosen by `Accept`: the supported type with the highest quality,
/// earliest first on ties; `*/*`, `text/*`, `application/*` and an absent header give the
/// default (CSV, or JSON for `application/*`). `None`: nothing acceptable (406).
pub fn accept_format(accept: Option<&str>) -> Option<Format> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Some(Format::Csv);
    };
    let mut best: Option<(f32, Format)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let ty = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            if let Some(v) = p.trim().strip_prefix("q=") {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        let format = match ty.as_str() {
            "text/csv" | "text/*" | "*/*" => Format::Csv,
            "application/json" | "application/*" => Format::Json,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, format));
        }
    }
    best.map(|(_, f)| f)
}

fn bad(msg: impl Into<String>) -> BadBody {
    BadBody(msg.into())
}

/// Parses a CSV body: one record per line (LF or CRLF, trailing newline optional, blank
/// lines skipped, fields quoted as in every CSV of the project). A record is either
/// `width` feature values (SageMaker's convention) or the reference batch line
/// `VIN,Date,f1,…,fW`, read by the core's batch-line parser exactly as `bms predict`
/// reads it.
pub fn parse_csv(body: &[u8], width: usize) -> Result<Rows, BadBody> {
    let rows =
        bms_core::io::batch_csv::read_scoring_csv(body, width).map_err(|e| bad(e.to_string()))?;
    Ok(Rows {
        n: rows.n,
        x: rows.x,
        keys: rows
            .keys
            .into_iter()
            .map(|(i, k)| (i, k.vin, k.date))
            .collect(),
    })
}

/// A JSON number or `null` (NaN, a missing value) as f32.
fn json_value(v: &Value, at: impl Fn() -> String) -> Result<f32, BadBody> {
    match v {
        Value::Null => Ok(f32::NAN),
        // serde_json's `float_roundtrip` reads the decimal to the nearest f64, as
        // parse_f64 does, so both bodies give the model the same f32.
        Value::Number(num) => match num.as_f64().map(check_range) {
            Some(Ok(f)) => Ok(f as f32),
            Some(Err(reason)) => Err(bad(format!("{}: {num} {reason}", at()))),
            None => Err(bad(format!("{}: {num} is not a number", at()))),
        },
        Value::String(s) => parse_f64(s.as_bytes())
            .map(|f| f as f32)
            .map_err(|reason| bad(format!("{}: {reason}", at()))),
        other => Err(bad(format!(
            "{}: expected a number or null, found {}",
            at(),
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Appends one row given as a JSON array of numbers (or `null`, or numeric strings).
fn push_row(x: &mut Vec<f32>, row: &[Value], width: usize, what: &str) -> Result<(), BadBody> {
    if row.len() != width {
        return Err(bad(format!(
            "{what}: expected {width} values, found {}",
            row.len()
        )));
    }
    for (k, v) in row.iter().enumerate() {
        x.push(json_value(v, || format!("{what}, value {}", k + 1))?);
    }
    Ok(())
}

fn syntax(e: serde_json::Error) -> BadBody {
    bad(format!("invalid JSON: {e}"))
}

/// Parses a JSON body: `{"instances": [row, …]}` or a bare `[row, …]`, each row a list
/// of `width` numbers (or `{"features": [...]}`, the XGBoost container's form).
pub fn parse_json(body: &[u8], width: usize) -> Result<Rows, BadBody> {
    let v: Value = serde_json::from_slice(body).map_err(syntax)?;
    let instances = match &v {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("instances") {
            Some(Value::Array(a)) => a,
            Some(other) => {
                return Err(bad(format!(
                    "\"instances\" must be an array, found {}",
                    kind(other)
                )));
            }
            None => {
                return Err(bad(
                    "expected {\"instances\": [[...], ...]} or a list of lists",
                ));
            }
        },
        other => {
            return Err(bad(format!(
                "expected {{\"instances\": [[...], ...]}} or a list of lists, found {}",
                kind(other)
            )));
        }
    };
    let mut x = Vec::with_capacity(instances.len() * width);
    for (i, inst) in instances.iter().enumerate() {
        let what = format!("instance {}", i + 1);
        match inst {
            Value::Array(row) => push_row(&mut x, row, width, &what)?,
            Value::Object(o) => match o.get("features") {
                Some(Value::Array(row)) => push_row(&mut x, row, width, &what)?,
                _ => {
                    return Err(bad(format!(
                        "{what}: an object instance needs \"features\": [...]"
                    )));
                }
            },
            other => {
                return Err(bad(format!(
                    "{what}: expected a list of {width} numbers, found {}",
                    kind(other)
                )));
            }
        }
    }
    Ok(Rows {
        n: instances.len(),
        x,
        keys: Vec::new(),
    })
}

/// Parses an `/invocations` body in `format`.
pub fn parse(format: Format, body: &[u8], width: usize) -> Result<Rows, BadBody> {
    let rows = match format {
        Format::Csv => parse_csv(body, width)?,
        Format::Json => parse_json(body, width)?,
    };
    refuse_duplicates(&rows)?;
    Ok(rows)
}

/// One body must not hold the same (VIN, Date) twice (SPEC §6): the stores key by it, so
/// the two rows would be one stored prediction and two answers.
fn refuse_duplicates(rows: &Rows) -> Result<(), BadBody> {
    if rows.keys.len() < 2 {
        return Ok(());
    }
    let mut seen = std::collections::HashMap::with_capacity(rows.keys.len());
    for (i, vin, date) in &rows.keys {
        if let Some(first) = seen.insert((vin.as_str(), *date), *i) {
            return Err(bad(format!(
                "rows {} and {}: the same VIN and Date twice ({vin}, {date})",
                first + 1,
                i + 1
            )));
        }
    }
    Ok(())
}

/// Writes a probability as the shortest decimal that reads back to the same f32.
fn push_prob(out: &mut String, p: f32, nan: &str) {
    if p.is_finite() {
        write!(out, "{p:?}").expect("writing to a String");
    } else {
        out.push_str(nan);
    }
}

/// The `/invocations` response body: one probability per line (CSV), or
/// `{"predictions": [p, …]}` (JSON).
pub fn format_predictions(format: Format, probs: &[f32]) -> String {
    let mut out = String::with_capacity(probs.len() * 12 + 20);
    match format {
        Format::Csv => {
            for &p in probs {
                push_prob(&mut out, p, "nan");
                out.push('\n');
            }
        }
        Format::Json => {
            out.push_str("{\"predictions\":[");
            for (i, &p) in probs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_prob(&mut out, p, "null");
            }
            out.push_str("]}");
        }
    }
    out
}

/// The reference gateway's request: `{"vin", "date", "features"}` with the features as a
/// string of comma-separated numbers or a JSON array.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRequest {
    pub vin: String,
    pub date: NaiveDate,
    pub x: Vec<f32>,
}

pub fn parse_gateway(body: &[u8], width: usize) -> Result<GatewayRequest, BadBody> {
    let v: Value = serde_json::from_slice(body).map_err(syntax)?;
    let Value::Object(o) = &v else {
        return Err(bad(format!(
            "expected an object {{\"vin\", \"date\", \"features\"}}, found {}",
            kind(&v)
        )));
    };
    let field = |name: &str| {
        o.get(name)
            .ok_or_else(|| bad(format!("missing field \"{name}\"")))
    };
    let vin = match field("vin")? {
        Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
        Value::String(_) => return Err(bad("field \"vin\" is empty")),
        other => {
            return Err(bad(format!(
                "field \"vin\" must be a string, found {}",
                kind(other)
            )));
        }
    };
    let date = match field("date")? {
        // The core's date parser: the same dates as every CSV reader accepts.
        Value::String(s) => bms_core::io::parse_date(s.as_bytes())
            .map_err(|reason| bad(format!("field \"date\": {reason}")))?,
        other => {
            return Err(bad(format!(
                "field \"date\" must be a YYYY-MM-DD string, found {}",
                kind(other)
            )));
        }
    };
    let mut x = Vec::with_capacity(width);
    match field("features")? {
        Value::String(s) => {
            let s = s.trim();
            let n = s.split(',').count();
            if n != width {
                return Err(bad(format!(
                    "field \"features\": expected {width} comma-separated values, found {n}"
                )));
            }
            for (k, f) in s.split(',').enumerate() {
                let v = parse_f32(f.as_bytes()).map_err(|reason| {
                    bad(format!("field \"features\", value {}: {reason}", k + 1))
                })?;
                x.push(v);
            }
        }
        Value::Array(row) => push_row(&mut x, row, width, "field \"features\"")?,
        other => {
            return Err(bad(format!(
                "field \"features\" must be a string of comma-separated numbers or an array, found {}",
                kind(other)
            )));
        }
    }
    Ok(GatewayRequest { vin, date, x })
}

/// The gateway response `{"vin", "date", "predicted_prob", "alarm", "model_id"}`.
pub fn format_gateway(req: &GatewayRequest, p: f32, alarm: bool, model_id: &str) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"vin\":");
    out.push_str(&Value::String(req.vin.clone()).to_string());
    write!(out, ",\"date\":\"{}\",\"predicted_prob\":", req.date).expect("String");
    push_prob(&mut out, p, "null");
    write!(out, ",\"alarm\":{alarm},\"model_id\":").expect("String");
    out.push_str(&Value::String(model_id.to_owned()).to_string());
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_crlf_blank_and_prefixed() {
        let rows = parse_csv(b"1,2,3\r\n\r\nV1,2024-01-01,4,nan,\n  \n5e0,6,7\n", 3).unwrap();
        assert_eq!(rows.n, 3);
        let date = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        assert_eq!(rows.keys, vec![(1, "V1".to_owned(), date)]);
        assert_eq!(&rows.x[..3], &[1.0, 2.0, 3.0]);
        assert_eq!(rows.x[3], 4.0);
        assert!(rows.x[4].is_nan() && rows.x[5].is_nan());
        assert_eq!(&rows.x[6..], &[5.0, 6.0, 7.0]);
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let e = parse_csv(b"1,2,3\n1,2\n", 3).unwrap_err();
        assert!(
            e.0.starts_with("line 2:") && e.0.contains("found 2 fields"),
            "{e:?}"
        );
        let e = parse_csv(b"1,2,3\n1,x,3\n", 3).unwrap_err();
        assert_eq!(e.0, "line 2, column 2: 'x' is not a number");
        let e = parse_csv(b"1,inf,3\n", 3).unwrap_err();
        assert!(e.0.contains("not a finite number"), "{e:?}");
        let e = parse_csv(b"1,2,3\n,2024-01-01,1,2,3\n", 3).unwrap_err();
        assert_eq!(e.0, "line 2, column 1: empty VIN");
        let e = parse_csv(b"V,2024-13-01,1,2,3\n", 3).unwrap_err();
        assert_eq!(
            e.0,
            "line 1, column 2: '2024-13-01' is not a YYYY-MM-DD date"
        );
        let e = parse_csv(b"\xff\xfe,2024-01-01,1,2,3\n", 3).unwrap_err();
        assert!(
            e.0.contains("line 1, column 1: VIN is not valid UTF-8"),
            "{e:?}"
        );
        let e = parse_csv(b"1,2,3\n\"V,1,2024-01-01,1,2,3\n", 3).unwrap_err();
        assert!(e.0.starts_with("line 2"), "an unterminated quote: {e:?}");
    }

    #[test]
    fn csv_vins_may_be_quoted_as_bms_predict_reads_them() {
        let rows = parse_csv(b"\"V,1\"\"x\",2024-01-01,1,2,3\n4,5,6\n", 3).unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        assert_eq!(rows.n, 2);
        assert_eq!(rows.keys, vec![(0, "V,1\"x".to_owned(), date)]);
        assert_eq!(rows.x, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn json_forms_and_errors() {
        let a = parse_json(br#"{"instances": [[1, 2.5], [null, "3"]]}"#, 2).unwrap();
        let b = parse_json(br#"[[1, 2.5], {"features": [null, 3]}]"#, 2).unwrap();
        assert_eq!(a.n, 2);
        assert_eq!(a.x[..2], b.x[..2]);
        assert!(a.x[2].is_nan() && b.x[2].is_nan());
        assert_eq!(a.x[3], 3.0);
        let e = parse_json(br#"{"instances": [[1, 2], [1]]}"#, 2).unwrap_err();
        assert_eq!(e.0, "instance 2: expected 2 values, found 1");
        let e = parse_json(br#"[[1, true]]"#, 2).unwrap_err();
        assert_eq!(
            e.0,
            "instance 1, value 2: expected a number or null, found a boolean"
        );
        let e = parse_json(br#"[[1, 1e400]]"#, 2).unwrap_err();
        assert!(e.0.starts_with("invalid JSON"), "{e:?}");
        assert!(parse_json(b"{\"instances\": 3}", 2).is_err());
    }

    #[test]
    fn json_and_csv_bodies_give_the_model_the_same_f32() {
        // Long decimals (what Python's repr and numpy's tolist write) and values near f32
        // rounding midpoints, where an f64 parse that is off by one unit in the last place
        // can round to the neighbouring f32.
        let mut values = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let v = f32::from_bits((next() as u32) & 0x7f7f_ffff);
            let up = f32::from_bits(v.to_bits() + 1);
            let mid = (f64::from(v) + f64::from(up)) / 2.0;
            let nudge = (next() % 9) as f64 - 4.0;
            values.push(format!("{:.17e}", mid + nudge * mid * f64::EPSILON));
            values.push(format!("{:.25e}", f64::from_bits(next() >> 2)));
        }
        values.retain(|t| parse_f64(t.as_bytes()).is_ok());
        let width = values.len();
        let csv = parse_csv(values.join(",").as_bytes(), width).unwrap();
        let json = parse_json(format!("[[{}]]", values.join(",")).as_bytes(), width).unwrap();
        for (k, t) in values.iter().enumerate() {
            assert_eq!(
                csv.x[k].to_bits(),
                json.x[k].to_bits(),
                "{t}: CSV {:e}, JSON {:e}",
                csv.x[k],
                json.x[k]
            );
        }
        let e = parse_json(br#"[[1, 1e39]]"#, 2).unwrap_err();
        assert!(
            e.0.contains("value 2: ") && e.0.contains("is beyond"),
            "{e:?}"
        );
        assert!(parse_csv(b"1,1e39", 2).unwrap_err().0.contains("beyond"));
    }

    #[test]
    fn a_body_with_the_same_vin_and_date_twice_is_refused() {
        let body = b"V1,2024-01-01,1,2\n3,4\nV2,2024-01-01,1,2\nV1,2024-01-01,5,6\n";
        let e = parse(Format::Csv, body, 2).unwrap_err();
        assert_eq!(
            e.0,
            "rows 1 and 4: the same VIN and Date twice (V1, 2024-01-01)"
        );
        assert_eq!(
            parse(Format::Csv, &body[..body.len() - 19], 2).unwrap().n,
            3
        );
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(accept_format(None), Some(Format::Csv));
        assert_eq!(accept_format(Some("*/*")), Some(Format::Csv));
        assert_eq!(accept_format(Some("application/json")), Some(Format::Json));
        assert_eq!(
            accept_format(Some("text/csv;q=0.5, application/json")),
            Some(Format::Json)
        );
        assert_eq!(accept_format(Some("application/x-protobuf")), None);
        assert_eq!(accept_format(Some("text/csv;q=0")), None);
        assert_eq!(
            content_format(Some("text/csv; charset=utf-8")),
            Ok(Format::Csv)
        );
        assert_eq!(
            content_format(Some("application/x-recordio-protobuf")),
            Err("application/x-recordio-protobuf".into())
        );
    }

    #[test]
    fn gateway_features_string_or_array() {
        let a = parse_gateway(
            br#"{"vin": "V1", "date": "2024-03-01", "features": "1, 2,nan"}"#,
            3,
        )
        .unwrap();
        let b = parse_gateway(
            br#"{"vin": "V1", "date": "2024-03-01", "features": [1, 2, null]}"#,
            3,
        )
        .unwrap();
        assert_eq!(a.vin, "V1");
        assert_eq!(a.x[..2], b.x[..2]);
        assert!(a.x[2].is_nan() && b.x[2].is_nan());
        let e = parse_gateway(br#"{"vin": "V1", "date": "March", "features": "1,2,3"}"#, 3)
            .unwrap_err();
        assert!(e.0.contains("'March' is not a YYYY-MM-DD date"), "{e:?}");
        // The CSV readers' dates, no more: not the year 19, not one-digit months.
        for date in ["19-10-20", "2024-1-5", "2024-02-30"] {
            let body = format!(r#"{{"vin": "V1", "date": "{date}", "features": "1,2,3"}}"#);
            let e = parse_gateway(body.as_bytes(), 3).unwrap_err();
            assert!(
                e.0.contains(&format!("'{date}' is not a YYYY-MM-DD date")),
                "{e:?}"
            );
        }
        let e = parse_gateway(
            br#"{"vin": "V1", "date": "2024-03-01", "features": "1,2"}"#,
            3,
        )
        .unwrap_err();
        assert!(
            e.0.contains("expected 3 comma-separated values, found 2"),
            "{e:?}"
        );
        let e = parse_gateway(br#"{"date": "2024-03-01", "features": "1,2,3"}"#, 3).unwrap_err();
        assert_eq!(e.0, "missing field \"vin\"");
        let body = format_gateway(&a, 0.25, false, "m\"1");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["vin"], "V1");
        assert_eq!(v["date"], "2024-03-01");
        assert_eq!(v["predicted_prob"], 0.25);
        assert_eq!(v["alarm"], false);
        assert_eq!(v["model_id"], "m\"1");
    }

    #[test]
    fn predictions_round_trip() {
        let probs = [0.1f32, 0.123_456_79, 1.0];
        let csv = format_predictions(Format::Csv, &probs);
        let back: Vec<f32> = csv.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(back, probs);
        assert!(csv.ends_with('\n'));
        let json: Value = serde_json::from_str(&format_predictions(Format::Json, &probs)).unwrap();
        let back: Vec<f32> = json["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(back, probs);
    }
}
