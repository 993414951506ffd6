//! The JSON request bodies of `bms serve`: `/invocations` (`bms::serve::codec::parse_json`:
//! `{"instances": [...]}` or a bare list of rows) and the gateway's `/predict`
//! (`parse_gateway`: `{"vin", "date", "features"}`), with the width the body's first row
//! implies and the reference 84: no panic, hang (deep nesting included) or unbounded
//! allocation; the rows have the width asked for; and the rows, written back as JSON (NaN
//! as `null`), parse to the same values bit for bit.
#![no_main]

use bms::serve::codec::{parse_gateway, parse_json};
use bms_fuzz::same_f32s;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The values as JSON numbers, NaN as `null`, and an infinity (what a number beyond
/// `f32`'s range such as `1e39` parses to) as `±3.4028236e38`, the shortest decimal that
/// rounds to it: JSON has no infinity, and `serde_json` would write it as `null` (found by
/// this target: `{"instances": [[1e39, 2, 3]]}`).
fn as_json(x: &[f32]) -> Vec<Value> {
    x.iter()
        .map(|&v| {
            if v.is_nan() {
                Value::Null
            } else if v.is_infinite() {
                json!(3.4028236e38_f64.copysign(v as f64))
            } else {
                json!(v as f64)
            }
        })
        .collect()
}

/// The length of the body's first row, if it has one.
fn first_row_len(v: &Value) -> Option<usize> {
    let rows = match v {
        Value::Array(a) => a,
        Value::Object(o) => match (o.get("instances"), o.get("features")) {
            (Some(Value::Array(a)), _) => a,
            (_, Some(Value::Array(f))) => return Some(f.len()),
            (_, Some(Value::String(s))) => return Some(s.split(',').count()),
            _ => return None,
        },
        _ => return None,
    };
    match rows.first()? {
        Value::Array(r) => Some(r.len()),
        Value::Object(o) => o.get("features")?.as_array().map(Vec::len),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut widths = vec![84];
    if let Ok(v) = serde_json::from_slice::<Value>(data)
        && let Some(n) = first_row_len(&v)
        && n > 0
        && n != 84
    {
        widths.push(n);
    }
    for width in widths {
        if let Ok(rows) = parse_json(data, width) {
            assert_eq!(rows.x.len(), rows.n * width, "rows × width values");
            assert!(rows.keys.is_empty());
            let body: Vec<Value> = rows
                .x
                .chunks(width)
                .map(|r| Value::Array(as_json(r)))
                .collect();
            let text = json!({ "instances": body }).to_string();
            let again = parse_json(text.as_bytes(), width)
                .unwrap_or_else(|e| panic!("rows written back do not parse: {e:?}"));
            assert_eq!(again.n, rows.n);
            assert!(
                same_f32s(again.x.iter(), rows.x.iter()),
                "values after write then parse"
            );
        }
        if let Ok(req) = parse_gateway(data, width) {
            assert_eq!(req.x.len(), width);
            assert!(!req.vin.is_empty() && req.vin.trim() == req.vin);
            let text = json!({
                "vin": req.vin,
                "date": req.date.format("%Y-%m-%d").to_string(),
                "features": as_json(&req.x),
            })
            .to_string();
            let again = parse_gateway(text.as_bytes(), width)
                .unwrap_or_else(|e| panic!("request written back does not parse: {e:?}"));
            assert_eq!((&again.vin, again.date), (&req.vin, req.date));
            assert!(
                same_f32s(again.x.iter(), req.x.iter()),
                "features after write then parse"
            );
        }
    }
});
