//! The GB/T 32960 decoder on hostile streams: every bad-packet kind mid-stream with the
//! frames around it intact, resynchronisation, pieces of any size, no panic on any bytes.
//! Packets are the facts file's worked examples (docs/GBT32960.md §8), edited and
//! re-checksummed by the helpers below, and for split cell entries packets from the
//! encoder, edited the same way.

use bms_core::gbt32960::{DecodeErrorKind, Decoder, Edition, Event, command, encode};
use proptest::prelude::*;

const VIN: &str = "LSPECEXAMPLE00001";

const REALTIME_2016: &str = "23 23 02 FE <VIN> 01 00 3C  19 03 0A 07 14 00
    01  01 03 01 01 6D 00 01 D6 19 0D E6 26 95 2A 01 2E 12 C0 14 00
    07  01 00 00 04 00 00 00 00 00
    08  01  01 00 4A 26 95 00 02 00 01 02 0E 80 FF FF
    09  01  01 00 02 41 FF
    00";

const REALTIME_2025: &str = "24 24 02 FE <VIN> 01 00 44  19 03 0A 07 14 00
    01  01 03 01 01 6D 00 01 D6 19 0D E6 74 B5 2A 01 2E 12 C0
    06  01 00 00 04 00 00 00 00 00 01 0A 01
    07  01  01 00 4A 74 B5 00 02 0E 80 FF FF
    08  01  01 00 02 41 FF
    FF 01 00 02 A1 A2 00 02 B1 B2  94";

const HEARTBEAT_2016: &str = "23 23 07 FE <VIN> 01 00 00 C8";

fn hex(s: &str) -> Vec<u8> {
    let vin: String = VIN.bytes().map(|b| format!("{b:02X} ")).collect();
    s.replace("<VIN>", &vin)
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// Recomputes the length field and the BCC of a packet whose data unit was edited.
fn reseal(mut p: Vec<u8>) -> Vec<u8> {
    p.pop();
    let n = (p.len() - 24) as u16;
    p[22..24].copy_from_slice(&n.to_be_bytes());
    let bcc = p[2..].iter().fold(0u8, |a, b| a ^ b);
    p.push(bcc);
    p
}

/// A short description of each event, for comparisons.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Frame {
        offset: u64,
        ts: i64,
        cells: Vec<u64>,
        temps: Vec<u64>,
        pack: [u64; 3],
        flags: Option<u32>,
    },
    Packet(u64, u8),
    Error(u64, DecodeErrorKind, String),
}

fn run(pieces: &[&[u8]]) -> Vec<Seen> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    // Where the last event ended: events tile the stream in order, never overlapping.
    let mut end = 0u64;
    let mut drain = |d: &mut Decoder, out: &mut Vec<Seen>| {
        while let Some(e) = d.next() {
            let (offset, len) = match &e {
                Event::Frame(i, _) | Event::Packet(i) => (i.offset, i.len as u64),
                Event::Error(e) => (e.offset, e.len),
            };
            assert!(offset >= end && len > 0, "{e:?} overlaps the event before");
            end = offset + len;
            out.push(match e {
                Event::Frame(i, f) => Seen::Frame {
                    offset: i.offset,
                    ts: f.timestamp_ms,
                    cells: f.cell_voltages.iter().map(|v| v.to_bits()).collect(),
                    temps: f.temperatures.iter().map(|v| v.to_bits()).collect(),
                    pack: [f.pack_voltage, f.pack_current, f.soc].map(f64::to_bits),
                    flags: f.alarm_flags,
                },
                Event::Packet(i) => Seen::Packet(i.offset, i.command),
                Event::Error(e) => Seen::Error(e.offset, e.kind, e.to_string()),
            });
        }
    };
    for p in pieces {
        d.push(p);
        drain(&mut d, &mut out);
    }
    d.finish();
    drain(&mut d, &mut out);
    let c = d.counts();
    assert_eq!(c.bytes, pieces.iter().map(|p| p.len() as u64).sum::<u64>());
    assert_eq!(d.pending(), 0);
    out
}

fn whole(bytes: &[u8]) -> Vec<Seen> {
    run(&[bytes])
}

fn byte_at_a_time(bytes: &[u8]) -> Vec<Seen> {
    let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
    run(&pieces)
}

fn kinds(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| match s {
            Seen::Frame { offset, .. } => format!("frame@{offset}"),
            Seen::Packet(o, c) => format!("packet@{o}:{c:02X}"),
            Seen::Error(o, k, _) => format!("{}@{o}", k.name()),
        })
        .collect()
}

/// `good`, then `bad`, then `good` again: the two good packets decode, the bad one is one
/// error of `kind` whose message holds `needle`.
fn sandwiched(bad: &[u8], kind: DecodeErrorKind, needle: &str) {
    for good in [hex(REALTIME_2016), hex(REALTIME_2025)] {
        let stream = [good.as_slice(), bad, good.as_slice()].concat();
        let seen = whole(&stream);
        let g = good.len() as u64;
        let b = bad.len() as u64;
        assert_eq!(
            kinds(&seen),
            [
                "frame@0".to_owned(),
                format!("{}@{g}", kind.name()),
                format!("frame@{}", g + b)
            ],
            "{seen:#?}"
        );
        let Seen::Error(_, _, msg) = &seen[1] else {
            unreachable!()
        };
        assert!(msg.contains(needle), "{msg}");
        assert!(msg.starts_with(&format!("byte offset {g}")), "{msg}");
        assert_eq!(byte_at_a_time(&stream), seen);
        // Every byte accounted for: the bad packet's are the error's (found by fuzzing:
        // packets refused for their content were not counted in error_bytes).
        let mut d = Decoder::new();
        d.push(&stream);
        d.finish();
        while d.next().is_some() {}
        let c = d.counts();
        assert_eq!(
            (c.bytes, c.error_bytes, c.errors, c.frames),
            (stream.len() as u64, b, 1, 2),
            "{kind:?}"
        );
    }
}

#[test]
fn a_wrong_checksum_is_one_error_and_the_packet_is_skipped_by_its_length() {
    let mut p = hex(REALTIME_2016);
    p[40] ^= 0x01;
    sandwiched(&p, DecodeErrorKind::Checksum, "wrong checksum");
}

#[test]
fn an_encrypted_data_unit_is_refused_not_parsed() {
    let mut p = hex(REALTIME_2016);
    p[21] = 0x03;
    let p = reseal(p);
    sandwiched(
        &p,
        DecodeErrorKind::Encrypted,
        "encrypted (encryption byte 03, AES)",
    );
}

#[test]
fn a_declared_length_past_the_data_is_refused() {
    // The cell entry says 3 cells; the item holds 2 and the temperatures follow.
    let mut p = hex(REALTIME_2016);
    let at = p.len() - 1 - 7 - 4 - 1; // the entry's cell count, before the two voltages
    assert_eq!(p[at], 0x02);
    p[at] = 0x09;
    let p = reseal(p);
    sandwiched(&p, DecodeErrorKind::Layout, "item 08 at data offset");
}

#[test]
fn an_unknown_item_type_is_refused() {
    let mut p = hex(REALTIME_2016);
    let at = p.len() - 1 - 7; // the temperature item's type
    assert_eq!(p[at], 0x09);
    p[at] = 0x2A;
    let p = reseal(p);
    sandwiched(&p, DecodeErrorKind::Layout, "item type 2A");
    // Reserved in 2016, a 2025 item: also unknown to the 2016 reading.
    let mut p = hex(REALTIME_2016);
    p[at] = 0x30;
    sandwiched(&reseal(p), DecodeErrorKind::Layout, "reserved item type");
}

#[test]
fn cell_entries_that_do_not_tile_are_refused() {
    // First cell 2 of 2: a gap at cell 1.
    let mut p = hex(REALTIME_2016);
    let at = p.len() - 1 - 7 - 4 - 1 - 2; // first-cell WORD
    assert_eq!(&p[at..at + 2], &[0x00, 0x01]);
    p[at + 1] = 0x02;
    sandwiched(
        &reseal(p),
        DecodeErrorKind::Layout,
        "where cell 1 was expected",
    );
    // Total 3 where the entries cover 2.
    let mut p = hex(REALTIME_2016);
    p[at - 1] = 0x03;
    sandwiched(&reseal(p), DecodeErrorKind::Layout, "cover cells 1-2 of 3");
}

#[test]
fn a_time_out_of_range_is_refused() {
    for (at, value, shown) in [(25, 13u8, "20"), (26, 31, "02-31"), (27, 24, "24:")] {
        let mut p = hex(REALTIME_2016);
        if at == 26 {
            p[25] = 2; // February
        }
        p[at] = value;
        sandwiched(&reseal(p), DecodeErrorKind::Time, shown);
    }
}

#[test]
fn a_marker_in_a_count_is_refused() {
    let mut p = hex(REALTIME_2016);
    let at = p.len() - 1 - 7 + 1; // the temperature item's count
    p[at] = 0xFF;
    sandwiched(&reseal(p), DecodeErrorKind::Layout, "invalid marker FF");
}

#[test]
fn a_repeated_frame_item_is_refused() {
    let mut p = hex(REALTIME_2016);
    let temps: Vec<u8> = p[p.len() - 8..p.len() - 1].to_vec();
    p.splice(p.len() - 1..p.len() - 1, temps);
    sandwiched(&reseal(p), DecodeErrorKind::Layout, "appears twice");
}

#[test]
fn garbage_between_packets_is_one_error() {
    let garbage = b"hello # $ ## not a packet\x00\x01";
    let msg = format!("{} byte(s) that are not a packet", garbage.len());
    sandwiched(garbage, DecodeErrorKind::NotAPacket, &msg);
}

#[test]
fn a_truncated_final_packet_is_reported_as_such() {
    let good = hex(REALTIME_2025);
    for cut in [1, 2, 10, 24, 30, good.len() - 1] {
        let stream = [good.as_slice(), &good[..cut]].concat();
        let seen = whole(&stream);
        let k = kinds(&seen);
        let want_kind = if cut == 1 {
            "not-a-packet"
        } else {
            "truncated"
        };
        assert_eq!(
            k,
            ["frame@0".to_owned(), format!("{want_kind}@{}", good.len())],
            "cut {cut}"
        );
        assert_eq!(byte_at_a_time(&stream), seen, "cut {cut}");
    }
    // Without finish(), a partial packet is waiting, not an error.
    let mut d = Decoder::new();
    d.push(&good[..30]);
    assert!(d.next().is_none());
    assert_eq!(d.pending(), 30);
}

#[test]
fn a_corrupted_length_resynchronises_on_the_next_start_symbol_with_one_error() {
    let good = hex(REALTIME_2016);
    let mut bad = hex(REALTIME_2016);
    bad[23] = 0xF0; // declares 240 bytes: the BCC fails and the length ends nowhere
    let g = good.len() as u64;
    let b = bad.len() as u64;
    // Enough packets follow to cover the declared length: a wrong checksum.
    let mut stream = [good.as_slice(), &bad].concat();
    let mut want = vec!["frame@0".to_owned(), format!("checksum@{g}")];
    for k in 0..4 {
        stream.extend_from_slice(&good);
        want.push(format!("frame@{}", g + b + k * g));
    }
    let seen = whole(&stream);
    assert_eq!(kinds(&seen), want, "{seen:#?}");
    assert_eq!(byte_at_a_time(&stream), seen);
    // The stream ends inside the declared length: truncated, and the packets inside it
    // are still read.
    let stream = [good.as_slice(), &bad, &good, &good].concat();
    let seen = whole(&stream);
    assert_eq!(
        kinds(&seen),
        [
            "frame@0".to_owned(),
            format!("truncated@{g}"),
            format!("frame@{}", g + b),
            format!("frame@{}", 2 * g + b)
        ],
        "{seen:#?}"
    );
    assert_eq!(byte_at_a_time(&stream), seen);
}

#[test]
fn markers_and_out_of_range_readings_decode_to_nan() {
    let mut p = hex(REALTIME_2016);
    // Vehicle item: voltage FFFE (abnormal), current 20001 (above its range), SOC 101.
    let v = 24 + 6 + 1;
    p[v + 9..v + 11].copy_from_slice(&[0xFF, 0xFE]);
    p[v + 11..v + 13].copy_from_slice(&20_001u16.to_be_bytes());
    p[v + 13] = 101;
    // Alarm flags FFFFFFFF: no flags.
    let a = v + 20 + 1;
    p[a + 1..a + 5].copy_from_slice(&[0xFF; 4]);
    let p = reseal(p);
    let mut d = Decoder::new();
    d.push(&p);
    let Some(Event::Frame(_, f)) = d.next() else {
        panic!("no frame")
    };
    assert!(f.pack_voltage.is_nan() && f.pack_current.is_nan() && f.soc.is_nan());
    assert_eq!(f.alarm_flags, None);
    assert!(f.cell_voltages[1].is_nan() && f.temperatures[1].is_nan());
}

#[test]
fn replies_and_non_frame_packets_give_no_frame() {
    let mut reply = hex(REALTIME_2016);
    reply[3] = 0x01; // a platform's success reply echoing the packet
    let reply = reseal(reply);
    // A realtime report with only the vehicle item: counted, no frame.
    let mut vehicle_only = hex(REALTIME_2016);
    vehicle_only.truncate(24 + 6 + 21);
    vehicle_only.push(0);
    let vehicle_only = reseal(vehicle_only);
    let stream = [reply.as_slice(), &vehicle_only, &hex(HEARTBEAT_2016)].concat();
    let mut d = Decoder::new();
    d.push(&stream);
    d.finish();
    let mut n = 0;
    while let Some(e) = d.next() {
        assert!(matches!(e, Event::Packet(_)), "{e:?}");
        n += 1;
    }
    assert_eq!(n, 3);
    let c = d.counts();
    assert_eq!((c.frames, c.replies, c.no_frame, c.errors), (0, 1, 1, 0));
    assert_eq!(c.packets(), 3);
    let text = c.to_string();
    assert!(text.contains("realtime report 2, heartbeat 1"), "{text}");
}

#[test]
fn both_editions_interleave_in_one_stream() {
    let stream = [hex(REALTIME_2016), hex(HEARTBEAT_2016), hex(REALTIME_2025)].concat();
    let mut d = Decoder::new();
    d.push(&stream);
    let mut editions = Vec::new();
    while let Some(e) = d.next() {
        match e {
            Event::Frame(i, _) | Event::Packet(i) => editions.push(i.edition),
            Event::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(editions, [Edition::V2016, Edition::V2016, Edition::V2025]);
}

#[test]
fn a_false_start_symbol_with_a_huge_length_does_not_stall_later_packets_forever() {
    // `##` with a plausible header declaring 65531 bytes, then real packets: the decoder
    // waits for the declared bytes (bounded), then finds the BCC wrong and rescans.
    let mut fake = hex(HEARTBEAT_2016);
    fake.pop();
    fake[22..24].copy_from_slice(&65531u16.to_be_bytes());
    let good = hex(REALTIME_2016);
    let mut stream = fake.clone();
    for _ in 0..800 {
        stream.extend_from_slice(&good);
    }
    let seen = whole(&stream);
    let frames = seen
        .iter()
        .filter(|s| matches!(s, Seen::Frame { .. }))
        .count();
    assert_eq!(frames, 800, "{:?}", &kinds(&seen)[..3]);
    assert_eq!(kinds(&seen)[0], "checksum@0");
    assert_eq!(seen.len(), 801, "{:?}", kinds(&seen));
}

/// A 2016 report of one 450-cell subsystem (entries of 200, 200 and 50 cells) from the
/// encoder, and the packet offsets of its three entry headers.
fn split_2016() -> (Vec<u8>, [usize; 3]) {
    let cells: Vec<f64> = (0..450).map(|i| 3.0 + f64::from(i) * 0.001).collect();
    let frame = bms_core::FrameRef {
        vin: VIN,
        timestamp_ms: 1_741_562_400_000,
        pack_voltage: 400.0,
        pack_current: 0.0,
        soc: 50.0,
        cell_voltages: &cells,
        temperatures: &[20.0],
        alarm_flags: None,
    };
    let p = encode::frame_packet(Edition::V2016, command::REALTIME, &frame).unwrap();
    let entry = |first: u16| {
        let mut head = 450u16.to_be_bytes().to_vec();
        head.extend_from_slice(&first.to_be_bytes());
        p.windows(4).position(|w| w == head).unwrap() - 5
    };
    let at = [entry(1), entry(201), entry(401)];
    (p, at)
}

#[test]
fn split_entries_in_any_order_read_back_in_cell_order() {
    let (p, [a, b, c]) = split_2016();
    let want = match &whole(&p)[..] {
        [Seen::Frame { cells, .. }] => cells.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(want.len(), 450);
    // The entries as 3, 1, 2 in the item.
    let end = c + 10 + 2 * 50;
    let swapped = [&p[..a], &p[c..end], &p[a..b], &p[b..c], &p[end..]].concat();
    let swapped = reseal(swapped);
    match &whole(&swapped)[..] {
        [Seen::Frame { cells, .. }] => assert_eq!(cells, &want),
        other => panic!("{other:?}"),
    }
}

#[test]
fn split_entries_that_overlap_or_leave_a_gap_are_refused() {
    for (first, needle) in [
        (200u16, "starts at cell 200 where cell 201 was expected"),
        (202, "starts at cell 202 where cell 201 was expected"),
    ] {
        let (mut p, [_, b, _]) = split_2016();
        p[b + 7..b + 9].copy_from_slice(&first.to_be_bytes());
        sandwiched(&reseal(p), DecodeErrorKind::Layout, needle);
    }
    // The last entry dropped (and the count lowered): cells 401-450 missing.
    let (mut p, [_, _, c]) = split_2016();
    let end = c + 10 + 2 * 50;
    p.drain(c..end);
    // Header, time, the 21-byte vehicle item, then the voltage item's type and count.
    let item = 24 + 6 + 21;
    assert_eq!(p[item..item + 2], [0x08, 3]);
    p[item + 1] = 2;
    sandwiched(
        &reseal(p),
        DecodeErrorKind::Layout,
        "cover cells 1-400 of 450",
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_in_any_pieces_never_panic_and_decode_alike(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(0usize..600, 0..8),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= bytes.len()).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for c in cuts {
            pieces.push(&bytes[from..c]);
            from = c;
        }
        pieces.push(&bytes[from..]);
        prop_assert_eq!(run(&pieces), whole(&bytes));
    }

    #[test]
    fn mutated_streams_never_panic_and_keep_the_untouched_packets(
        flips in prop::collection::vec((0usize..4000, any::<u8>()), 1..4),
    ) {
        let packets = [hex(REALTIME_2016), hex(REALTIME_2025), hex(HEARTBEAT_2016)];
        let mut stream = Vec::new();
        let mut spans = Vec::new();
        for i in 0..30 {
            let p = &packets[i % 3];
            spans.push((stream.len(), stream.len() + p.len()));
            stream.extend_from_slice(p);
        }
        let mut touched = vec![false; spans.len()];
        for (at, x) in flips {
            let at = at % stream.len();
            stream[at] ^= x | 1;
            for (k, (a, b)) in spans.iter().enumerate() {
                if (*a..*b).contains(&at) {
                    touched[k] = true;
                }
            }
        }
        let seen = whole(&stream);
        prop_assert_eq!(byte_at_a_time(&stream), seen.clone());
        // Every packet no flip touched and whose neighbours are intact is decoded at its offset.
        for (k, (a, _)) in spans.iter().enumerate() {
            let guarded = !touched[k] && (k == 0 || !touched[k - 1]);
            if guarded {
                let found = seen.iter().any(|s| match s {
                    Seen::Frame { offset, .. } | Seen::Packet(offset, _) => *offset == *a as u64,
                    Seen::Error(..) => false,
                });
                prop_assert!(found, "packet {} at {} lost: {:?}", k, a, kinds(&seen));
            }
        }
    }
}
