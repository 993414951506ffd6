//! `Model` on the reference-shaped XGBoost export (200 trees, depth 7, 84 inputs): load
//! time, single-row `predict` latency, and 100k-row `predict` throughput (rows/s).

mod common;

use std::hint::black_box;

use bms_core::Model;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::ArrayView2;

const BULK_ROWS: usize = 100_000;

fn bench(c: &mut Criterion) {
    let path = common::bench_model_path();
    let bytes = std::fs::read(&path).expect("benches/data/xgb_ref.onnx");

    let mut g = c.benchmark_group("model_load");
    g.sample_size(10);
    g.bench_function("xgb_ref_from_bytes", |b| {
        b.iter(|| Model::from_bytes(black_box(&bytes)).expect("load"))
    });
    g.finish();

    let model = Model::from_bytes(&bytes).expect("load");
    let width = model.input_width();
    let data = common::model_rows(BULK_ROWS, width);
    let x = ArrayView2::from_shape((BULK_ROWS, width), &data).expect("shape");

    let mut g = c.benchmark_group("model_single_row");
    g.throughput(Throughput::Elements(1));
    let mut r = 0usize;
    g.bench_function("xgb_ref_predict_1", |b| {
        b.iter(|| {
            r = (r + 1) % 1024;
            model
                .predict(black_box(x.slice(ndarray::s![r..r + 1, ..])))
                .expect("predict")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("model_bulk");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BULK_ROWS as u64));
    g.bench_function("xgb_ref_predict_100k", |b| {
        b.iter(|| model.predict(black_box(x)).expect("predict"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
