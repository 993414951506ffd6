//! The CPU work of one `bms serve` `/invocations` request, stage by stage, for 1-line and
//! 1,000-line CSV bodies (values written `%.18e`, as the reference Lambda's input):
//! parsing the body, scoring the rows, formatting the answer. HTTP is measured by
//! `benches/serve_bench.py`.

mod common;

use std::hint::black_box;

use bms::serve::codec::{Format, format_predictions, parse_csv};
use bms_core::Model;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::ArrayView2;

fn body(rows: &[f32], width: usize) -> Vec<u8> {
    let mut out = String::new();
    for row in rows.chunks(width) {
        let line: Vec<String> = row
            .iter()
            .map(|v| {
                if v.is_nan() {
                    "nan".to_owned()
                } else {
                    format!("{:.18e}", *v as f64)
                }
            })
            .collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    let model = Model::load(common::bench_model_path()).expect("load");
    let width = model.input_width();
    for n in [1usize, 1000] {
        let rows = common::model_rows(n, width);
        let csv = body(&rows, width);
        let mut g = c.benchmark_group(format!("serve_{n}_lines"));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("parse_csv", |b| {
            b.iter(|| parse_csv(black_box(&csv), width).expect("parse"))
        });
        let parsed = parse_csv(&csv, width).expect("parse");
        let x = ArrayView2::from_shape((n, width), &parsed.x).expect("shape");
        g.bench_function("predict", |b| {
            b.iter(|| model.predict(black_box(x)).expect("predict"))
        });
        let probs = model.predict(x).expect("predict").to_vec();
        g.bench_function("format_csv", |b| {
            b.iter(|| format_predictions(Format::Csv, black_box(&probs)))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
