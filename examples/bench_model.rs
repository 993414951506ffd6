//! Times `Model::load`, single-row `Model::predict` and one bulk `Model::predict` on rows
//! read from a raw little-endian f32 file, and prints the timings as one JSON object.
//! `benches/compare_model.py` drives it; by hand:
//!
//! ```text
//! cargo run --release --example bench_model -- MODEL.onnx ROWS.f32 [SINGLE [REPEATS [OUT.f32]]]
//! ```
//!
//! `ROWS.f32` holds `N × width` values, row-major (the model's input width). `SINGLE`
//! rows (default 2000) are predicted one call each; the whole file is predicted in one
//! call `REPEATS` times (default 5). `OUT.f32` receives the bulk probabilities.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use bms_core::Model;
use ndarray::ArrayView2;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_path, rows_path, rest @ ..] = args.as_slice() else {
        bail!("usage: bench_model MODEL.onnx ROWS.f32 [SINGLE [REPEATS [OUT.f32]]]");
    };
    let single: usize = rest.first().map_or(Ok(2000), |s| s.parse())?;
    let repeats: usize = rest.get(1).map_or(Ok(5), |s| s.parse())?;
    let out_path = rest.get(2);

    let t = Instant::now();
    let model = Model::load(model_path)?;
    let load_s = t.elapsed().as_secs_f64();

    let bytes = std::fs::read(rows_path).with_context(|| format!("reading {rows_path}"))?;
    let width = model.input_width();
    if bytes.len() % (4 * width) != 0 {
        bail!(
            "{rows_path}: {} bytes is not a whole number of {width}-float rows",
            bytes.len()
        );
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n = values.len() / width;
    let x = ArrayView2::from_shape((n, width), &values)?;

    let single = single.min(n);
    let mut per_call = Vec::with_capacity(single);
    let mut sink = 0f32;
    for r in 0..single {
        let row = x.slice(ndarray::s![r..r + 1, ..]);
        let t = Instant::now();
        let p = model.predict(row)?;
        per_call.push(t.elapsed().as_secs_f64());
        sink += p[0];
    }
    let single_total: f64 = per_call.iter().sum();
    per_call.sort_by(f64::total_cmp);
    let median = per_call.get(single / 2).copied().unwrap_or(f64::NAN);

    let mut bulk = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let p = model.predict(x)?;
        bulk.push(t.elapsed().as_secs_f64());
        last = Some(p);
    }
    let p = last.context("no bulk run")?;
    bulk.sort_by(f64::total_cmp);
    if let Some(path) = out_path {
        let out: Vec<u8> = p.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, out).with_context(|| format!("writing {path}"))?;
    }
    let json = serde_json::json!({
        "load_s": load_s,
        "rows": n,
        "single_calls": single,
        "single_mean_us": 1e6 * single_total / single.max(1) as f64,
        "single_median_us": 1e6 * median,
        "bulk_best_s": bulk[0],
        "bulk_median_s": bulk[bulk.len() / 2],
        "bulk_rows_per_s": n as f64 / bulk[0],
        "checksum": sink + p.sum(),
    });
    println!("{json}");
    Ok(())
}
