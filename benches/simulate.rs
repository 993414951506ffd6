//! Fleet simulator throughput: frames/s for one vehicle's frame stream and vehicle-days/s
//! for daily-only fleets (frames streamed into the daily aggregation, all threads).

use std::hint::black_box;

use bms_core::simulate::{SimConfig, for_each_frame, simulate_daily};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn config(vehicles: usize, days: u32) -> SimConfig {
    SimConfig {
        vehicles,
        days,
        seed: 1,
        ..SimConfig::default()
    }
}

fn frames(c: &mut Criterion) {
    let cfg = config(1, 60);
    let mut n = 0u64;
    for_each_frame(&cfg, 0, |_| {
        n += 1;
        Ok(())
    })
    .unwrap();
    let mut g = c.benchmark_group("simulate");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("frames_1_vehicle_60_days", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for_each_frame(&cfg, 0, |f| {
                sum += f.pack_voltage;
                Ok(())
            })
            .unwrap();
            black_box(sum)
        })
    });
    let fleet = config(16, 60);
    g.throughput(Throughput::Elements(16 * 60));
    g.bench_function("daily_16_vehicles_60_days", |b| {
        b.iter(|| black_box(simulate_daily(&fleet).unwrap().table.len()))
    });
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
