//! The GB/T 32960 decoder on 96-cell / 32-probe realtime packets (frames/s and MB/s), both
//! editions, the stream pushed whole and in 4 KiB pieces (a TCP read's size), next to a
//! memory read of the same bytes as the yardstick. Goal (issue 18): ≥ 1 M frames/s on one
//! core.

mod common;

use std::hint::black_box;

use bms_core::FrameRef;
use bms_core::gbt32960::{Decoder, Edition, Event, command, encode};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PACKETS: usize = 20_000;
const CELLS: usize = 96;
const PROBES: usize = 32;

/// A capture of `PACKETS` realtime packets of one edition, with the cells and probes of
/// the frame-features benchmark (already at the protocol's 1 mV and 1 °C resolution).
fn capture(edition: Edition) -> Vec<u8> {
    let (v, t) = common::frame_buffers(PACKETS, CELLS, PROBES);
    let mut out = Vec::new();
    for i in 0..PACKETS {
        let f = FrameRef {
            vin: "LBENCH00000000001",
            timestamp_ms: 1_741_562_400_000 + 10_000 * i as i64,
            pack_voltage: 360.0,
            pack_current: -12.3,
            soc: 55.0,
            cell_voltages: &v[i * CELLS..(i + 1) * CELLS],
            temperatures: &t[i * PROBES..(i + 1) * PROBES],
            alarm_flags: Some(0),
        };
        encode::frame_packet_into(&mut out, edition, command::REALTIME, &f)
            .expect("benchmark frames encode");
    }
    out
}

/// Decodes `bytes` pushed in pieces of `piece` bytes; returns a checksum of the frames.
fn decode(bytes: &[u8], piece: usize) -> f64 {
    let mut d = Decoder::new();
    let mut acc = 0.0;
    let mut frames = 0;
    for chunk in bytes.chunks(piece) {
        d.push(chunk);
        while let Some(e) = d.next() {
            if let Event::Frame(_, f) = e {
                acc += f.cell_voltages[0] + f.temperatures[0];
                frames += 1;
            }
        }
    }
    assert_eq!(frames, PACKETS);
    acc
}

fn bench(c: &mut Criterion) {
    for edition in [Edition::V2016, Edition::V2025] {
        let bytes = capture(edition);
        let name = format!("gbt32960_{}_96x32", edition.year());
        println!(
            "{name}: {} packets, {} bytes ({} bytes per packet)",
            PACKETS,
            bytes.len(),
            bytes.len() / PACKETS
        );
        let mut g = c.benchmark_group(&name);
        g.throughput(Throughput::Elements(PACKETS as u64));
        g.bench_function("decode_whole", |b| {
            b.iter(|| decode(black_box(&bytes), bytes.len()))
        });
        g.bench_function("decode_4k_pieces", |b| {
            b.iter(|| decode(black_box(&bytes), 4096))
        });
        g.bench_function("yardstick_read_bytes", |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for w in black_box(&bytes).chunks_exact(8) {
                    acc = acc.wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
                }
                black_box(acc)
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
