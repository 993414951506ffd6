//! The GB/T 32960 encoder: byte-exact against the facts file's worked examples
//! (docs/GBT32960.md §8, typed in as hex here), read back by the independently written
//! decoder (every frame equal after the protocol's quantisation, both editions, markers,
//! split cell entries, any split of the stream), and the inputs it must refuse.

use bms_core::gbt32960::encode::{
    self, AlarmItem, CellGroup, EncodeError, ProbeGroup, VehicleItem,
};
use bms_core::gbt32960::{Decoder, Edition, Event, PacketInfo, command, response};
use bms_core::{Frame, FrameRef};
use proptest::prelude::*;

const VIN: &str = "LSPECEXAMPLE00001";
/// 2025-03-10 07:20:00 Beijing.
const EXAMPLE_MS: i64 = 1_741_562_400_000;

fn hex(s: &str) -> Vec<u8> {
    let vin: String = VIN.bytes().map(|b| format!("{b:02X} ")).collect();
    s.replace("<VIN>", &vin)
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

const HEARTBEAT_2016: &str = "23 23 07 FE <VIN> 01 00 00 C8";

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

/// The vehicle item of the worked examples.
fn example_vehicle() -> VehicleItem {
    VehicleItem {
        state: 0x01,
        charging: 0x03,
        mode: 0x01,
        speed_kmh: 36.5,
        odometer_km: 12034.5,
        voltage: 355.8,
        current: -12.3,
        soc: 42.0,
        dcdc: 0x01,
        gear: 0x2E,
        insulation_kohm: 4800.0,
        accelerator_pct: 20.0,
        brake_pct: 0.0,
    }
}

fn example_packet(edition: Edition) -> Vec<u8> {
    let cells = [3.712, f64::NAN];
    let temps = [25.0, f64::NAN];
    let mut data = encode::time_bytes(EXAMPLE_MS).unwrap().to_vec();
    encode::vehicle_item(&mut data, edition, &example_vehicle()).unwrap();
    let levels = [(10u8, 1u8)];
    let alarm = AlarmItem {
        level: 1,
        flags: 0x400,
        faults: [&[]; 4],
        flag_levels: if edition == Edition::V2025 {
            &levels
        } else {
            &[]
        },
    };
    encode::alarm_item(&mut data, edition, &alarm).unwrap();
    let group = CellGroup {
        number: 1,
        voltage: 7.4,
        current: -12.3,
        cells: &cells,
    };
    encode::cell_voltages_item(&mut data, edition, &[group]).unwrap();
    let probes = ProbeGroup {
        number: 1,
        temperatures: &temps,
    };
    encode::temperatures_item(&mut data, edition, &[probes]).unwrap();
    if edition == Edition::V2025 {
        encode::signature_block(&mut data, 0x01, &[0xA1, 0xA2], &[0xB1, 0xB2]).unwrap();
    }
    encode::packet(
        edition,
        command::REALTIME,
        response::COMMAND,
        VIN,
        0x01,
        &data,
    )
    .unwrap()
}

#[test]
fn the_worked_examples_are_reproduced_byte_for_byte() {
    assert_eq!(
        encode::heartbeat(Edition::V2016, VIN).unwrap(),
        hex(HEARTBEAT_2016)
    );
    assert_eq!(example_packet(Edition::V2016), hex(REALTIME_2016));
    assert_eq!(example_packet(Edition::V2025), hex(REALTIME_2025));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn frame_packets_write_the_examples_alarm_and_temperature_items() {
    let cells = [3.712, f64::NAN];
    let temps = [25.0, f64::NAN];
    let frame = FrameRef {
        vin: VIN,
        timestamp_ms: EXAMPLE_MS,
        pack_voltage: 355.8,
        pack_current: -12.3,
        soc: 42.0,
        cell_voltages: &cells,
        temperatures: &temps,
        alarm_flags: Some(0x400),
    };
    for (edition, alarm, temps) in [
        (
            Edition::V2016,
            "07 01 00 00 04 00 00 00 00 00",
            "09 01 01 00 02 41 FF",
        ),
        (
            Edition::V2025,
            "06 01 00 00 04 00 00 00 00 00 01 0A 01",
            "08 01 01 00 02 41 FF",
        ),
    ] {
        let p = encode::frame_packet(edition, command::REALTIME, &frame).unwrap();
        assert!(contains(&p, &hex(alarm)), "{edition}: {p:02X?}");
        assert!(contains(&p, &hex(temps)), "{edition}: {p:02X?}");
        assert!(contains(&p, &hex("19 03 0A 07 14 00 01")), "{edition}");
        // Pack voltage, current and SOC as in the examples' vehicle item.
        let pack = match edition {
            Edition::V2016 => "0D E6 26 95 2A",
            Edition::V2025 => "0D E6 74 B5 2A",
        };
        assert!(contains(&p, &hex(pack)), "{edition}");
        let decoded = decode_all(&[&p]);
        assert_eq!(decoded.frames.len(), 1);
        assert_same(&decoded.frames[0], &quantised(&frame.to_owned()));
    }
}

/// What the decoder gives back for `f`: the protocol's quantisation, done here from the
/// facts file's units.
fn quantised(f: &Frame) -> Frame {
    let q = |v: f64, per: f64| (v * per).round() / per;
    Frame {
        vin: f.vin.clone(),
        timestamp_ms: f.timestamp_ms - f.timestamp_ms.rem_euclid(1000),
        pack_voltage: q(f.pack_voltage, 10.0),
        pack_current: q(f.pack_current, 10.0),
        soc: f.soc.round(),
        cell_voltages: f.cell_voltages.iter().map(|&v| q(v, 1000.0)).collect(),
        temperatures: f.temperatures.iter().map(|&t| t.round()).collect(),
        alarm_flags: f.alarm_flags,
    }
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

fn assert_same(got: &Frame, want: &Frame) {
    assert_eq!(got.vin, want.vin);
    assert_eq!(got.timestamp_ms, want.timestamp_ms);
    assert_eq!(got.alarm_flags, want.alarm_flags);
    for (what, g, w) in [
        ("pack_voltage", got.pack_voltage, want.pack_voltage),
        ("pack_current", got.pack_current, want.pack_current),
        ("soc", got.soc, want.soc),
    ] {
        assert!(same(g, w), "{what}: got {g}, want {w}");
    }
    assert_eq!(got.cell_voltages.len(), want.cell_voltages.len());
    for (i, (g, w)) in got
        .cell_voltages
        .iter()
        .zip(&want.cell_voltages)
        .enumerate()
    {
        assert!(same(*g, *w), "cell {i}: got {g}, want {w}");
    }
    assert_eq!(got.temperatures.len(), want.temperatures.len());
    for (i, (g, w)) in got.temperatures.iter().zip(&want.temperatures).enumerate() {
        assert!(same(*g, *w), "probe {i}: got {g}, want {w}");
    }
}

#[derive(Default)]
struct Decoded {
    frames: Vec<Frame>,
    frame_info: Vec<PacketInfo>,
    packets: Vec<PacketInfo>,
    errors: Vec<String>,
}

fn decode_all(pieces: &[&[u8]]) -> Decoded {
    let mut d = Decoder::new();
    let mut out = Decoded::default();
    let drain = |d: &mut Decoder, out: &mut Decoded| {
        while let Some(e) = d.next() {
            match e {
                Event::Frame(i, f) => {
                    out.frames.push(f.to_owned());
                    out.frame_info.push(i);
                }
                Event::Packet(i) => out.packets.push(i),
                Event::Error(e) => out.errors.push(e.to_string()),
            }
        }
    };
    for p in pieces {
        d.push(p);
        drain(&mut d, &mut out);
    }
    d.finish();
    drain(&mut d, &mut out);
    out
}

#[test]
fn a_2016_subsystem_of_more_than_200_cells_is_split_into_entries_that_read_back() {
    let cells: Vec<f64> = (0..450).map(|i| 3.0 + f64::from(i) * 0.001).collect();
    let temps = [20.0; 3];
    let frame = Frame {
        vin: VIN.into(),
        timestamp_ms: EXAMPLE_MS,
        pack_voltage: 1000.0,
        pack_current: -1000.0,
        soc: 100.0,
        cell_voltages: cells,
        temperatures: temps.to_vec(),
        alarm_flags: None,
    };
    let p = encode::frame_packet(Edition::V2016, command::REISSUE, &frame.as_ref()).unwrap();
    // Three entries: cells 1-200, 201-400, 401-450, each saying the subsystem has 450.
    for (first, m) in [(1u16, 200u8), (201, 200), (401, 50)] {
        let mut head = 450u16.to_be_bytes().to_vec();
        head.extend_from_slice(&first.to_be_bytes());
        head.push(m);
        assert!(contains(&p, &head), "entry from {first}");
    }
    let d = decode_all(&[&p]);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(d.frame_info[0].command, command::REISSUE);
    assert_same(&d.frames[0], &quantised(&frame));
}

#[test]
fn login_logout_and_platform_packets_are_read_back_with_their_time_and_serial() {
    let codes16 = ["SUB01", "SUB02"];
    let code25 = "ABCDEFGHIJKLMNOPQRSTUVWX";
    let packets = [
        encode::vehicle_login(
            Edition::V2016,
            VIN,
            EXAMPLE_MS,
            7,
            "89860012345678901234",
            &codes16,
        )
        .unwrap(),
        encode::vehicle_login(
            Edition::V2025,
            VIN,
            EXAMPLE_MS,
            8,
            "8986",
            &[code25, code25],
        )
        .unwrap(),
        encode::vehicle_login(Edition::V2025, VIN, EXAMPLE_MS, 9, "", &[]).unwrap(),
        encode::vehicle_logout(Edition::V2016, VIN, EXAMPLE_MS + 1000, 7).unwrap(),
        encode::platform_login(
            Edition::V2025,
            "PLATFORM000000001",
            EXAMPLE_MS,
            1,
            "user",
            "secret",
            0x01,
        )
        .unwrap(),
        encode::platform_logout(Edition::V2025, "PLATFORM000000001", EXAMPLE_MS, 1).unwrap(),
        encode::heartbeat(Edition::V2025, VIN).unwrap(),
        encode::time_sync(Edition::V2016, VIN).unwrap(),
    ];
    let stream = packets.concat();
    let d = decode_all(&[&stream]);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let seen: Vec<_> = d
        .packets
        .iter()
        .map(|i| (i.command, i.id().to_owned(), i.time_ms, i.serial))
        .collect();
    let v = || VIN.to_owned();
    let p = || "PLATFORM000000001".to_owned();
    let t = Some(EXAMPLE_MS);
    assert_eq!(
        seen,
        [
            (command::VEHICLE_LOGIN, v(), t, Some(7)),
            (command::VEHICLE_LOGIN, v(), t, Some(8)),
            (command::VEHICLE_LOGIN, v(), t, Some(9)),
            (
                command::VEHICLE_LOGOUT,
                v(),
                Some(EXAMPLE_MS + 1000),
                Some(7)
            ),
            (command::PLATFORM_LOGIN, p(), t, Some(1)),
            (command::PLATFORM_LOGOUT, p(), t, Some(1)),
            (command::HEARTBEAT, v(), None, None),
            (command::TIME_SYNC, v(), None, None),
        ]
    );
    // 2016 login: 30 + 2 codes of 5 bytes; 2025: 29 + 1 BMS count + 2 codes of 24.
    assert_eq!(packets[0].len(), 25 + 40);
    assert_eq!(packets[1].len(), 25 + 29 + 1 + 48);
    assert_eq!(packets[4].len(), 25 + 41);
}

#[test]
fn replies_echo_the_command_and_vin_and_give_no_frame() {
    let request = example_packet(Edition::V2025);
    let mut d = Decoder::new();
    d.push(&request);
    let Some(Event::Frame(info, _)) = d.next() else {
        panic!("no frame");
    };
    let reply = encode::reply_to(&info, response::SUCCESS).unwrap();
    assert_eq!(
        &reply[..reply.len() - 1],
        &hex("24 24 02 01 <VIN> 01 00 06 19 03 0A 07 14 00")[..]
    );
    let hb = encode::response(Edition::V2016, command::HEARTBEAT, VIN, 0x01, None).unwrap();
    let d = decode_all(&[&reply, &hb]);
    assert!(d.frames.is_empty() && d.errors.is_empty());
    let got: Vec<_> = d
        .packets
        .iter()
        .map(|i| (i.command, i.response, i.is_command(), i.time_ms))
        .collect();
    assert_eq!(
        got,
        [
            (command::REALTIME, 0x01, false, Some(EXAMPLE_MS)),
            (command::HEARTBEAT, 0x01, false, None)
        ]
    );
    // The BCC is the XOR of the bytes from the command on.
    let bcc = reply[2..reply.len() - 1].iter().fold(0, |a, b| a ^ b);
    assert_eq!(reply[reply.len() - 1], bcc);
}

fn example_frame() -> Frame {
    Frame {
        vin: VIN.into(),
        timestamp_ms: EXAMPLE_MS,
        pack_voltage: 355.8,
        pack_current: -12.3,
        soc: 42.0,
        cell_voltages: vec![3.712, 3.7],
        temperatures: vec![25.0],
        alarm_flags: Some(0),
    }
}

fn refused(edition: Edition, edit: impl FnOnce(&mut Frame)) -> EncodeError {
    let mut f = example_frame();
    edit(&mut f);
    encode::frame_packet(edition, command::REALTIME, &f.as_ref()).unwrap_err()
}

#[test]
fn out_of_range_readings_are_refused_naming_field_and_value() {
    use Edition::{V2016, V2025};
    type Edit = Box<dyn FnOnce(&mut Frame)>;
    let cases: Vec<(Edition, Edit, &str)> = vec![
        (
            V2016,
            Box::new(|f| f.pack_voltage = 1000.1),
            "pack_voltage 1000.1 ",
        ),
        (
            V2025,
            Box::new(|f| f.pack_voltage = 6000.1),
            "pack_voltage 6000.1 ",
        ),
        (
            V2016,
            Box::new(|f| f.pack_voltage = -0.1),
            "pack_voltage -0.1 ",
        ),
        (
            V2016,
            Box::new(|f| f.pack_current = 1000.1),
            "pack_current 1000.1 ",
        ),
        (
            V2025,
            Box::new(|f| f.pack_current = -3000.1),
            "pack_current -3000.1 ",
        ),
        (V2016, Box::new(|f| f.soc = 100.5), "soc 100.5 "),
        (V2025, Box::new(|f| f.soc = f64::INFINITY), "soc inf "),
        (
            V2016,
            Box::new(|f| f.cell_voltages[1] = 60.0006),
            "cell_voltages[1] 60.0006 ",
        ),
        (
            V2025,
            Box::new(|f| f.cell_voltages[0] = -0.001),
            "cell_voltages[0] -0.001 ",
        ),
        (
            V2016,
            Box::new(|f| f.temperatures[0] = 210.5),
            "temperatures[0] 210.5 ",
        ),
        (
            V2025,
            Box::new(|f| f.temperatures[0] = -41.0),
            "temperatures[0] -41 ",
        ),
    ];
    for (edition, edit, needle) in cases {
        let e = refused(edition, edit);
        assert!(matches!(e, EncodeError::OutOfRange { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with(needle), "{msg}");
        assert!(msg.contains(&edition.to_string()), "{msg}");
    }
    // The edges of the ranges are accepted.
    for edition in [V2016, V2025] {
        let mut f = example_frame();
        f.pack_voltage = 1000.0;
        f.pack_current = -1000.0;
        f.soc = 0.0;
        f.cell_voltages = vec![0.0, 60.0];
        f.temperatures = vec![-40.0, 210.0];
        encode::frame_packet(edition, command::REALTIME, &f.as_ref()).unwrap();
    }
}

#[test]
fn bad_vins_times_commands_and_shapes_are_refused() {
    for vin in [
        "",
        "LSPECEXAMPLE0000",
        "LSPECEXAMPLE000012",
        "LSPECEXAMPLE0000\u{e9}",
        "LSPECEXAMPLE0000\n",
        "LSPECEXAMPLE0000 ",
    ] {
        let e = refused(Edition::V2016, |f| f.vin = vin.into());
        assert!(matches!(e, EncodeError::Vin { .. }), "{vin:?}: {e:?}");
        assert!(e.to_string().contains(&format!("{vin:?}")), "{e}");
        assert!(matches!(
            encode::heartbeat(Edition::V2025, vin),
            Err(EncodeError::Vin { .. })
        ));
    }
    // 2000-01-01 00:00:00 and 2099-12-31 23:59:59 Beijing are the ends of the range.
    let first = 946_656_000_000;
    let last = 4_102_415_999_999;
    assert_eq!(encode::time_bytes(first).unwrap(), [0, 1, 1, 0, 0, 0]);
    assert_eq!(encode::time_bytes(last).unwrap(), [99, 12, 31, 23, 59, 59]);
    for t in [first - 1, last + 1, i64::MIN, i64::MAX] {
        let e = refused(Edition::V2025, |f| f.timestamp_ms = t);
        assert_eq!(e, EncodeError::Time { utc_ms: t });
        assert!(e.to_string().contains(&t.to_string()));
        assert!(encode::vehicle_logout(Edition::V2016, VIN, t, 1).is_err());
    }
    let f = example_frame();
    let e = encode::frame_packet(Edition::V2016, command::VEHICLE_LOGIN, &f.as_ref()).unwrap_err();
    assert!(e.to_string().starts_with("command 01"), "{e}");
    let e = refused(Edition::V2016, |f| f.cell_voltages.clear());
    assert!(e.to_string().contains("0 cells"), "{e}");
    let e = refused(Edition::V2025, |f| f.alarm_flags = Some(u32::MAX));
    assert!(e.to_string().contains("0xFFFFFFFF"), "{e}");
    // Too many cells for one packet.
    let e = refused(Edition::V2025, |f| f.cell_voltages = vec![3.7; 40_000]);
    assert!(matches!(e, EncodeError::TooLong { .. }), "{e:?}");
    let e = refused(Edition::V2016, |f| f.cell_voltages = vec![3.7; 60_000]);
    assert!(
        matches!(e, EncodeError::TooMany { .. } | EncodeError::TooLong { .. }),
        "{e:?}"
    );
    let e = encode::packet(Edition::V2016, 0x02, 0xFE, VIN, 1, &[0; 65_532]).unwrap_err();
    assert_eq!(e, EncodeError::TooLong { len: 65_532 });
    assert!(encode::packet(Edition::V2016, 0x02, 0xFE, VIN, 1, &[0; 65_531]).is_ok());
    // Replies carry a result, never the command flag; 04-07 are 2025's.
    for (edition, flag) in [
        (Edition::V2016, 0xFE),
        (Edition::V2016, 0x04),
        (Edition::V2025, 0x08),
    ] {
        let e = encode::response(edition, command::HEARTBEAT, VIN, flag, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("response flag {flag:02X}")),
            "{e}"
        );
    }
    assert!(encode::response(Edition::V2025, command::HEARTBEAT, VIN, 0x04, None).is_ok());
    // Login fields.
    assert!(encode::vehicle_login(Edition::V2016, VIN, EXAMPLE_MS, 0, "", &[]).is_err());
    assert!(
        encode::vehicle_login(Edition::V2016, VIN, EXAMPLE_MS, 1, &"9".repeat(21), &[]).is_err()
    );
    assert!(encode::vehicle_login(Edition::V2016, VIN, EXAMPLE_MS, 1, "", &["AB", "ABC"]).is_err());
    assert!(encode::vehicle_login(Edition::V2025, VIN, EXAMPLE_MS, 1, "", &["SHORT"]).is_err());
    assert!(
        encode::platform_login(Edition::V2016, VIN, EXAMPLE_MS, 1, &"u".repeat(13), "", 1).is_err()
    );
}

#[derive(Debug, Clone)]
struct Case {
    edition: Edition,
    command: u8,
    frame: Frame,
}

/// A reading in `lo..=hi`, or NaN one time in eight.
fn reading(lo: f64, hi: f64) -> impl Strategy<Value = f64> {
    prop_oneof![1 => Just(f64::NAN), 7 => lo..=hi]
}

fn case() -> impl Strategy<Value = Case> {
    (any::<bool>(), any::<bool>()).prop_flat_map(|(v2025, reissue)| {
        let (edition, volts, amps) = if v2025 {
            (Edition::V2025, 6000.0, 3000.0)
        } else {
            (Edition::V2016, 1000.0, 1000.0)
        };
        (
            "[A-HJ-NPR-Z0-9]{17}",
            946_656_000_000i64..4_102_416_000_000,
            reading(0.0, volts),
            reading(-amps, amps),
            reading(0.0, 100.0),
            prop::collection::vec(reading(0.0, 60.0), 1..=400),
            prop::collection::vec(reading(-40.0, 210.0), 1..=64),
            prop::option::of(0u32..0xFFFF_FFFE),
        )
            .prop_map(move |(vin, ts, v, i, soc, cells, temps, flags)| Case {
                edition,
                command: if reissue {
                    command::REISSUE
                } else {
                    command::REALTIME
                },
                frame: Frame {
                    vin,
                    timestamp_ms: ts,
                    pack_voltage: v,
                    pack_current: i,
                    soc,
                    cell_voltages: cells,
                    temperatures: temps,
                    alarm_flags: flags,
                },
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_encoded_frame_reads_back_equal_after_quantisation(
        cases in prop::collection::vec(case(), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut stream = Vec::new();
        let mut starts = Vec::new();
        for c in &cases {
            starts.push(stream.len() as u64);
            encode::frame_packet_into(&mut stream, c.edition, c.command, &c.frame.as_ref())
                .unwrap();
            stream.extend(encode::heartbeat(c.edition, &c.frame.vin).unwrap());
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for c in cuts {
            pieces.push(&stream[from..c]);
            from = c;
        }
        pieces.push(&stream[from..]);
        let d = decode_all(&pieces);
        prop_assert!(d.errors.is_empty(), "{:?}", d.errors);
        prop_assert_eq!(d.frames.len(), cases.len());
        prop_assert_eq!(d.packets.len(), cases.len());
        for ((c, got), info) in cases.iter().zip(&d.frames).zip(&d.frame_info) {
            prop_assert_eq!(info.edition, c.edition);
            prop_assert_eq!(info.command, c.command);
            assert_same(got, &quantised(&c.frame));
        }
        prop_assert_eq!(d.frame_info.iter().map(|i| i.offset).collect::<Vec<_>>(), starts);
    }

    #[test]
    fn frame_packet_into_appends_exactly_what_frame_packet_returns(c in case()) {
        let alone = encode::frame_packet(c.edition, c.command, &c.frame.as_ref()).unwrap();
        let mut out = vec![0xAA; 3];
        encode::frame_packet_into(&mut out, c.edition, c.command, &c.frame.as_ref()).unwrap();
        prop_assert_eq!(&out[..3], &[0xAA; 3]);
        prop_assert_eq!(&out[3..], &alone[..]);
    }
}

/// Groups with distinct numbers in any order, each with its own values.
fn groups(max_number: u8, max_len: usize) -> impl Strategy<Value = Vec<(u8, Vec<f64>)>> {
    prop::sample::subsequence((1..=max_number).collect::<Vec<_>>(), 1..5)
        .prop_flat_map(move |numbers| {
            let n = numbers.len();
            (
                Just(numbers).prop_shuffle(),
                prop::collection::vec(prop::collection::vec(reading(0.0, 60.0), 1..=max_len), n),
            )
        })
        .prop_map(|(numbers, values)| numbers.into_iter().zip(values).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The decoder's ordering choice (facts §7.4): cells and probes of several subsystems
    /// (packs) come out ordered by number, whatever order the item holds them in.
    #[test]
    fn several_groups_read_back_in_number_order(
        v2025 in any::<bool>(),
        cells in groups(50, 300),
        probes in groups(50, 20),
    ) {
        let edition = if v2025 { Edition::V2025 } else { Edition::V2016 };
        let probes: Vec<(u8, Vec<f64>)> = probes
            .into_iter()
            .map(|(n, v)| (n, v.iter().map(|x| (x * 4.0 - 40.0).clamp(-40.0, 210.0)).collect()))
            .collect();
        let mut data = encode::time_bytes(EXAMPLE_MS).unwrap().to_vec();
        let vehicle = VehicleItem::of_pack(edition, 400.0, 12.5, 55.0);
        encode::vehicle_item(&mut data, edition, &vehicle).unwrap();
        let cell_groups: Vec<CellGroup> = cells
            .iter()
            .map(|(n, c)| CellGroup { number: *n, voltage: 100.0, current: 0.0, cells: c })
            .collect();
        encode::cell_voltages_item(&mut data, edition, &cell_groups).unwrap();
        let probe_groups: Vec<ProbeGroup> = probes
            .iter()
            .map(|(n, t)| ProbeGroup { number: *n, temperatures: t })
            .collect();
        encode::temperatures_item(&mut data, edition, &probe_groups).unwrap();
        let p = encode::packet(edition, command::REALTIME, response::COMMAND, VIN, 1, &data)
            .unwrap();
        let d = decode_all(&[&p]);
        prop_assert!(d.errors.is_empty(), "{:?}", d.errors);
        let in_order = |mut g: Vec<(u8, Vec<f64>)>| {
            g.sort_by_key(|x| x.0);
            g.into_iter().flat_map(|x| x.1).collect::<Vec<f64>>()
        };
        let want = Frame {
            vin: VIN.into(),
            timestamp_ms: EXAMPLE_MS,
            pack_voltage: 400.0,
            pack_current: 12.5,
            soc: 55.0,
            cell_voltages: in_order(cells),
            temperatures: in_order(probes),
            alarm_flags: None,
        };
        assert_same(&d.frames[0], &quantised(&want));
    }
}

#[test]
fn the_edges_of_every_range_read_back() {
    let first = 946_656_000_000;
    let last = 4_102_415_999_000;
    let frames = [
        Frame {
            timestamp_ms: first,
            pack_voltage: 0.0,
            pack_current: -1000.0,
            soc: 0.0,
            cell_voltages: vec![0.0, 60.0, f64::NAN],
            temperatures: vec![-40.0, 210.0, f64::NAN],
            alarm_flags: Some(0xFFFF_FFFD),
            ..example_frame()
        },
        Frame {
            timestamp_ms: last,
            pack_voltage: f64::NAN,
            pack_current: f64::NAN,
            soc: f64::NAN,
            cell_voltages: vec![f64::NAN; 201],
            temperatures: vec![f64::NAN],
            alarm_flags: None,
            ..example_frame()
        },
    ];
    for edition in [Edition::V2016, Edition::V2025] {
        let stream: Vec<u8> = frames
            .iter()
            .flat_map(|f| encode::frame_packet(edition, command::REALTIME, &f.as_ref()).unwrap())
            .collect();
        let d = decode_all(&[&stream]);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(d.frames.len(), 2);
        for (got, want) in d.frames.iter().zip(&frames) {
            assert_same(got, want);
        }
    }
}
