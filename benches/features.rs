//! Frame features on 96-cell / 32-probe frames (frames/s), next to a plain sum over the
//! same buffers as the memory-speed yardstick.

mod common;

use std::hint::black_box;

use bms_core::{FeatureConfig, FrameRef, frame_features};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const FRAMES: usize = 20_000;
const CELLS: usize = 96;
const PROBES: usize = 32;

fn bench(c: &mut Criterion) {
    let (v, t) = common::frame_buffers(FRAMES, CELLS, PROBES);
    let (vw, tw) = common::frame_buffers_wide(FRAMES, CELLS, PROBES);
    let cfg = FeatureConfig::default();
    let mut g = c.benchmark_group("frame_features_96x32");
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function("frame_features", |b| b.iter(|| run(&v, &t, &cfg)));
    g.bench_function("frame_features_wide_spread", |b| {
        b.iter(|| run(&vw, &tw, &cfg))
    });
    g.bench_function("yardstick_plain_sum", |b| {
        b.iter(|| {
            let mut acc = 0.0;
            for i in 0..FRAMES {
                let s: f64 = v[i * CELLS..(i + 1) * CELLS].iter().sum();
                let u: f64 = t[i * PROBES..(i + 1) * PROBES].iter().sum();
                acc += black_box(s) + u;
            }
            black_box(acc)
        })
    });
    g.finish();
}

fn run(v: &[f64], t: &[f64], cfg: &FeatureConfig) -> f64 {
    let mut acc = 0.0;
    for i in 0..FRAMES {
        let f = FrameRef {
            vin: "LBENCH00000000001",
            timestamp_ms: i as i64,
            pack_voltage: 360.0,
            pack_current: 10.0,
            soc: 50.0,
            cell_voltages: &v[i * CELLS..(i + 1) * CELLS],
            temperatures: &t[i * PROBES..(i + 1) * PROBES],
            alarm_flags: None,
        };
        let x = frame_features(black_box(&f), cfg);
        acc += x.soc_bias + x.cell_v_std;
    }
    black_box(acc)
}

criterion_group!(benches, bench);
criterion_main!(benches);
