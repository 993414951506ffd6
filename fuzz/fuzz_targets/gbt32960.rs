//! The GB/T 32960 stream decoder (`bms_core::gbt32960::Decoder`): no panic, hang or
//! unbounded allocation on any byte stream; the same events whether the stream arrives in
//! one piece or in pieces of any size (the piece sizes come from the input); every byte is
//! accounted for (`bytes = packet bytes + error bytes`, nothing pending after the end); the
//! events tile the stream in order without overlap; a frame's VIN is its packet's.
#![no_main]

use bms_core::gbt32960::{Decoder, Event};
use libfuzzer_sys::fuzz_target;

/// Every event of the stream `data`, pushed in pieces of the sizes `sizes` cycles through
/// (a size 0 means the whole rest); `Debug` text prints floats exactly and NaN as NaN.
fn events(data: &[u8], sizes: &[u8]) -> (Vec<Seen>, Decoder) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = match sizes.get(i % sizes.len().max(1)) {
            Some(&s) if s > 0 => s as usize,
            _ => data.len() - at,
        };
        let end = (at + n).min(data.len());
        d.push(&data[at..end]);
        at = end;
        i += 1;
        drain(&mut d, &mut out, data.len() as u64);
    }
    d.finish();
    drain(&mut d, &mut out, data.len() as u64);
    (out, d)
}

/// An event: its span of the stream, what it is, and its `Debug` text.
#[derive(Debug, PartialEq)]
struct Seen {
    offset: u64,
    len: u64,
    what: What,
    text: String,
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum What {
    Frame,
    Packet,
    Error,
}

fn drain(d: &mut Decoder, out: &mut Vec<Seen>, total: u64) {
    let mut last_end = out.last().map_or(0, |s| s.offset + s.len);
    while let Some(e) = d.next() {
        let (offset, len, what) = match &e {
            Event::Frame(info, frame) => {
                assert_eq!(frame.vin, info.id(), "a frame's VIN is its packet's");
                assert_eq!(Some(frame.timestamp_ms), info.time_ms);
                (info.offset, info.len as u64, What::Frame)
            }
            Event::Packet(info) => (info.offset, info.len as u64, What::Packet),
            Event::Error(err) => {
                assert!(!err.reason.is_empty(), "an error says why");
                (err.offset, err.len, What::Error)
            }
        };
        assert!(len > 0, "an event covers bytes: {e:?}");
        assert!(offset >= last_end, "events in order without overlap: {e:?}");
        assert!(offset + len <= total, "an event inside the stream: {e:?}");
        last_end = offset + len;
        let text = format!("{e:?}");
        out.push(Seen {
            offset,
            len,
            what,
            text,
        });
    }
}

fuzz_target!(|input: &[u8]| {
    // The first byte says how many of the next bytes are piece sizes.
    let (sizes, data) = match input.split_first() {
        Some((&k, rest)) => rest.split_at((k as usize % 8).min(rest.len())),
        None => (&[][..], input),
    };
    let (whole, d) = events(data, &[]);
    let c = d.counts();
    assert_eq!(d.pending(), 0, "nothing held after the end");
    assert_eq!(c.bytes, data.len() as u64, "every byte consumed");
    let packets: u64 = c.packets();
    let count = |w: What| whole.iter().filter(|e| e.what == w).count() as u64;
    let (frames, errors) = (count(What::Frame), count(What::Error));
    assert_eq!(c.frames, frames);
    assert_eq!(c.errors, errors);
    assert_eq!(packets + errors, whole.len() as u64);
    assert_eq!(c.errors_by_kind.iter().sum::<u64>(), errors);
    let packet_bytes: u64 = whole
        .iter()
        .filter(|e| e.what != What::Error)
        .map(|e| e.len)
        .sum();
    assert_eq!(packet_bytes + c.error_bytes, c.bytes, "bytes = packets + errors");
    if !sizes.is_empty() {
        let (pieces, _) = events(data, sizes);
        assert_eq!(whole, pieces, "the same events in pieces of {sizes:?}");
    }
});
