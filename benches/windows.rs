//! Windows for 1,000 vehicles × 365 days with the reference 14 × 6 spec (windows/s and
//! output bytes/s).

mod common;

use std::hint::black_box;

use bms_core::{WindowSpec, windows};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let table = common::daily_table(1_000, 365);
    let spec = WindowSpec::default();
    let n = windows(&table, &spec).unwrap().len() as u64;
    let mut g = c.benchmark_group("windows_1000x365");
    g.sample_size(20);
    g.throughput(Throughput::Elements(n));
    g.bench_function("windows", |b| {
        b.iter(|| black_box(windows(black_box(&table), &spec).unwrap()))
    });
    g.throughput(Throughput::Bytes(n * spec.width() as u64 * 4));
    g.bench_function("windows_bytes", |b| {
        b.iter(|| black_box(windows(black_box(&table), &spec).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
