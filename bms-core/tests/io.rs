//! Readers and writers: exact formats, every error naming file/line/column, lenient
//! counts, and round trips.

use std::path::Path;

use bms_core::daily::{DailyColumn as C, aggregate};
use bms_core::io::batch_csv::{BatchOptions, read_batch_csv_from};
use bms_core::io::daily_csv::{REFERENCE_HEADER, read_daily_csv_from};
use bms_core::io::frame_csv::read_frame_csv_from;
use bms_core::io::{self, ReadMode};
use bms_core::{BmsError, DailyConfig, FrameRef, Frames, WindowSpec, windows};

fn daily(text: &str, mode: ReadMode) -> bms_core::Result<io::ReadReport<bms_core::DailyTable>> {
    read_daily_csv_from(text.as_bytes(), Some(Path::new("d.csv")), mode)
}

const H: &str = REFERENCE_HEADER;

#[test]
fn daily_csv_accepts_reference_number_forms() {
    let text = format!(
        "{H}\r\nV1,2024-01-01,3.6e2,-1.25E+01,4.099999999999999645e+00,3.99,nan,NaN,0.0\r\nV1,2024-01-02,,NAN,1,2,3,4,nan\r\n"
    );
    let r = daily(&text, ReadMode::Strict).unwrap();
    assert_eq!((r.read, r.accepted, r.rejects.len()), (2, 2, 0));
    let a = &r.data.rows[0];
    assert_eq!(a.get(C::TotalVoltage), 360.0);
    assert_eq!(a.get(C::TotalCurrent), -12.5);
    assert_eq!(a.get(C::CellMaxVoltage), 4.1);
    assert!(a.get(C::MaxTemperature).is_nan() && a.get(C::MinTemperature).is_nan());
    assert_eq!(a.label, 0.0);
    // Columns the file lacks (extended) read as NaN.
    assert!(a.get(C::SpreadMean).is_nan());
    let b = &r.data.rows[1];
    assert!(b.get(C::TotalVoltage).is_nan() && b.get(C::TotalCurrent).is_nan());
    assert!(b.label.is_nan());
    // No trailing newline, extended columns in any order, header without Label.
    let text = "VIN,Date,TotalVoltage,TotalCurrent,CellMaxVoltage,CellMinVoltage,MaxTemperature,MinTemperature,frames,spread_mean\nV,2024-01-01,1,2,3,4,5,6,7,0.5";
    let r = daily(text, ReadMode::Strict).unwrap();
    assert_eq!(r.data.rows[0].get(C::Frames), 7.0);
    assert_eq!(r.data.rows[0].get(C::SpreadMean), 0.5);
    assert!(r.data.rows[0].label.is_nan());
}

#[test]
fn daily_csv_errors_name_file_line_and_column() {
    let cases = [
        (
            format!("{H}\nV1,2024-01-01,1,2,3,4,5,6,0\nV1,2024-01-02,1,abc,3,4,5,6,0\n"),
            "d.csv, line 3, column 4 (TotalCurrent): 'abc' is not a number",
        ),
        (
            format!("{H}\nV1,2024-01-01,1,2,3,4,5,6\n"),
            "d.csv, line 2: expected 9 fields, found 8",
        ),
        (
            format!("{H}\nV1,2024-13-01,1,2,3,4,5,6,0\n"),
            "d.csv, line 2, column 2 (Date): '2024-13-01' is not a YYYY-MM-DD date",
        ),
        (
            format!("{H}\n,2024-01-01,1,2,3,4,5,6,0\n"),
            "d.csv, line 2, column 1 (VIN): empty VIN",
        ),
        (
            format!("{H}\nV1,2024-01-01,1,2,3,4,5,6,0.5\n"),
            "column 9 (Label): label 0.5 is not 0, 1 or nan",
        ),
        (
            format!("{H}\nV1,2024-01-01,1,2,3,4,5,inf,0\n"),
            "column 8 (MinTemperature): 'inf' is not a finite number",
        ),
        (
            format!("{H}\nV1,2024-01-01,1,2,3,4,5,6,0\r\nV1,2024-01-01,1,2,3,4,5,6,0\n"),
            "d.csv: duplicate row for VIN V1 on 2024-01-01: lines 2 and 3",
        ),
        (
            "VIN,Date,TotalCurrent\n".to_string(),
            "d.csv: header: expected",
        ),
        (
            format!("{H},bogus\n"),
            "found 'VIN,Date,TotalVoltage,TotalCurrent,CellMaxVoltage,CellMinVoltage,MaxTemperature,MinTemperature,Label,bogus'",
        ),
        (String::new(), "found an empty file"),
    ];
    for (text, want) in cases {
        let e = daily(&text, ReadMode::Strict).unwrap_err().to_string();
        assert!(e.contains(want), "expected «{want}» in «{e}»");
    }
}

#[test]
fn daily_csv_lenient_mode_collects_rejects_and_counts() {
    let text = format!(
        "{H}\nV1,2024-01-01,1,2,3,4,5,6,0\nV1,2024-01-02,1,x,3,4,5,6,0\n\nV1,2024-01-03,1,2\nV1,2024-01-01,9,9,9,9,9,9,1\nV1,2024-01-04,1,2,3,4,5,6,1\n"
    );
    let r = daily(&text, ReadMode::Lenient).unwrap();
    assert_eq!((r.read, r.accepted), (5, 2));
    let lines: Vec<u64> = r.rejects.iter().map(|x| x.line).collect();
    assert_eq!(lines, vec![3, 5, 6]);
    assert!(
        r.rejects[0].reason.contains("column 4 (TotalCurrent)"),
        "{:?}",
        r.rejects[0]
    );
    assert!(
        r.rejects[2].reason.contains("lines 2 and 6"),
        "{:?}",
        r.rejects[2]
    );
    assert_eq!(r.read, r.accepted + r.rejects.len() as u64);
}

#[test]
fn daily_csv_round_trip_is_exact() {
    let text = format!(
        "{H},spread_mean,spread_max,temp_delta_max,soc_deviation_mean,frames\n\"V,1\",2024-01-01,0.1,-2.5e-7,3.7000000000000001,nan,3.0000000000000001e38,5,1.0,1,2,3,4,5\n"
    );
    // SPEC §4: beyond the f32 range models read is refused, like an infinity.
    let e = daily(
        &text.replace("3.0000000000000001e38", "1e300"),
        ReadMode::Strict,
    )
    .unwrap_err();
    assert!(e.to_string().contains("column 7 (MaxTemperature)"), "{e}");
    let t = daily(&text, ReadMode::Strict).unwrap().data;
    assert_eq!(t.rows[0].vin, "V,1");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.csv");
    io::write_daily_csv(&p, &t, true).unwrap();
    let back = io::read_daily_csv(&p, ReadMode::Strict).unwrap().data;
    assert_eq!(back, t);
    let written = std::fs::read_to_string(&p).unwrap();
    assert!(
        written.starts_with(&format!("{H},spread_mean,")),
        "{written}"
    );
    assert!(written.contains(",nan,"), "{written}");
    // Reference-only output keeps the exact reference header.
    io::write_daily_csv(&p, &t, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap().lines().next().unwrap(),
        H
    );
}

fn batch(
    text: &str,
    width: usize,
    mode: ReadMode,
) -> bms_core::Result<io::ReadReport<io::BatchData>> {
    read_batch_csv_from(
        text.as_bytes(),
        Some(Path::new("b.csv")),
        BatchOptions {
            width,
            labels: false,
            mode,
        },
    )
}

#[test]
fn batch_csv_reference_lines_and_rejects() {
    let good = format!(
        "VIN1,2024-03-01,{}\r\n",
        (0..84)
            .map(|i| format!("{:.18e}", i as f64 * 0.1))
            .collect::<Vec<_>>()
            .join(",")
    );
    let short = "VIN2,2024-03-01,1,2,3\n";
    let bad_num = format!("VIN3,2024-03-01,{},zz\n", vec!["1"; 83].join(","));
    let bad_date = format!("VIN4,03/01/2024,{}\n", vec!["1"; 84].join(","));
    let text = format!("{good}{short}\n{bad_num}{bad_date}{good}");
    let r = batch(&text, 84, ReadMode::Lenient).unwrap();
    assert_eq!((r.read, r.accepted, r.rejects.len()), (5, 2, 3));
    assert_eq!(r.data.lines, vec![1, 6]);
    assert_eq!(r.data.x.dim(), (2, 84));
    // %.18e of an f64, parsed as f64 then narrowed to f32 as pandas + XGBoost do.
    assert_eq!(r.data.x[[0, 3]], (0.30000000000000004f64) as f32);
    let reasons: Vec<String> = r
        .rejects
        .iter()
        .map(|x| format!("{}: {}", x.line, x.reason))
        .collect();
    assert!(
        reasons[0].starts_with("2: expected 86 fields"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("4: column 86: 'zz' is not a number"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("5: column 2: '03/01/2024'"),
        "{reasons:?}"
    );
    // Strict mode stops at the first bad line with file and line.
    let e = batch(&text, 84, ReadMode::Strict).unwrap_err().to_string();
    assert!(e.starts_with("b.csv, line 2: expected 86 fields"), "{e}");
    // Empty input: nothing read, nothing rejected.
    let r = batch("", 84, ReadMode::Strict).unwrap();
    assert_eq!((r.read, r.accepted, r.data.x.dim()), (0, 0, (0, 84)));
}

/// Found by fuzzing (fuzz target `batch_csv`): a VIN that starts with U+FEFF on a later
/// line (kept: only a file's first bytes are a byte-order mark) was written unquoted as the
/// new file's first bytes, and read back without it. It is quoted, and reads back whole.
#[test]
fn a_vin_starting_with_a_bom_character_round_trips() {
    let r = batch(
        "\u{feff}V0,2024-01-01,1\n\u{feff}V1,2024-01-02,2\n",
        1,
        ReadMode::Strict,
    )
    .unwrap();
    let vins: Vec<&str> = r.data.keys.iter().map(|k| k.vin.as_str()).collect();
    assert_eq!(vins, ["V0", "\u{feff}V1"]);
    let windows = bms_core::WindowBatch {
        x: r.data.x.slice(ndarray::s![1.., ..]).to_owned(),
        y: ndarray::Array1::zeros(1),
        keys: r.data.keys[1..].to_vec(),
    };
    let mut text = Vec::new();
    io::batch_csv::write_batch_csv_to(&mut text, &windows, false).unwrap();
    assert_eq!(
        String::from_utf8(text.clone()).unwrap(),
        "\"\u{feff}V1\",2024-01-02,2.0\n"
    );
    let again = batch(std::str::from_utf8(&text).unwrap(), 1, ReadMode::Strict).unwrap();
    assert_eq!(again.data.keys, windows.keys);
}

/// Found by fuzzing (fuzz target `batch_csv`): a number beyond `f32`'s range (`1e39`) was
/// read as an infinity while the text `inf` is refused. One rule now (SPEC §4): such a
/// number is refused like an infinity, naming line and column; `f32::MAX` itself round
/// trips.
#[test]
fn batch_numbers_beyond_f32_are_refused_and_the_largest_round_trip() {
    for (line, col) in [
        ("V1,2024-01-01,1,1e39,0\n", 4),
        ("V1,2024-01-01,1,0,-1e300\n", 5),
    ] {
        let e = batch(line, 3, ReadMode::Strict).unwrap_err().to_string();
        assert!(
            e.contains(&format!("line 1, column {col}")) && e.contains("32-bit"),
            "{line}: {e}"
        );
        let lenient = batch(line, 3, ReadMode::Lenient).unwrap();
        assert_eq!((lenient.read, lenient.accepted), (1, 0));
    }
    let r = batch(
        "V1,2024-01-02,3.4028235e38,-3.4028235e38,0\n",
        3,
        ReadMode::Strict,
    )
    .unwrap();
    let x = &r.data.x;
    assert_eq!(x.row(0).to_vec(), vec![f32::MAX, f32::MIN, 0.0]);
    let windows = bms_core::WindowBatch {
        x: x.clone(),
        y: ndarray::Array1::zeros(1),
        keys: r.data.keys.clone(),
    };
    let mut text = Vec::new();
    io::batch_csv::write_batch_csv_to(&mut text, &windows, false).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text, "V1,2024-01-02,3.4028235e38,-3.4028235e38,0.0\n");
    let again = batch(&text, 3, ReadMode::Strict).unwrap();
    assert_eq!(again.data.x, *x);
}

#[test]
fn windows_written_as_batch_read_back_identically() {
    let mut rows = vec![];
    for d in 0..20u64 {
        let mut r = bms_core::DailyRow::empty(
            "LVIN0000000000001",
            chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(d),
        );
        for c in C::ALL {
            r.set(
                c,
                if d % 7 == 3 {
                    f64::NAN
                } else {
                    1.0 / (d as f64 + c.index() as f64 + 3.0)
                },
            );
        }
        r.label = if d == 15 { 1.0 } else { 0.0 };
        rows.push(r);
    }
    let t = bms_core::DailyTable { rows };
    let b = windows(&t, &WindowSpec::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.csv");
    io::write_batch_csv(&p, &b, true).unwrap();
    let back = io::read_batch_csv(
        &p,
        BatchOptions {
            width: 84,
            labels: true,
            mode: ReadMode::Strict,
        },
    )
    .unwrap();
    assert_eq!(back.data.x, b.x);
    assert_eq!(back.data.labels.unwrap(), b.y.to_vec());
    assert_eq!(back.data.keys, b.keys);
}

const FH: &str = "vin,timestamp,pack_voltage,pack_current,soc,cell_v_1,cell_v_2,temp_1,alarm_flags";

fn frames_csv(text: &str, mode: ReadMode) -> bms_core::Result<io::ReadReport<Frames>> {
    read_frame_csv_from(text.as_bytes(), Some(Path::new("f.csv")), mode)
}

#[test]
fn frame_csv_timestamps_flags_and_nan() {
    let text = format!(
        "{FH}\nV1,1704067200000,7.4,-3.5,55,3.7,3.71,20,\nV1,2024-01-01T08:00:00+08:00,7.4,2,55,nan,3.72,21,0x400\nV1,1704070800000,,,,3.7,3.70,,1024\n"
    );
    let r = frames_csv(&text, ReadMode::Strict).unwrap();
    assert_eq!(r.accepted, 3);
    let f = &r.data;
    assert_eq!(f.get(0).alarm_flags, None);
    // 08:00 in Beijing is midnight UTC, one millisecond-exact match with line 2.
    assert_eq!(f.get(1).timestamp_ms, 1_704_067_200_000);
    assert_eq!(f.get(1).alarm_flags, Some(0x400));
    assert!(f.get(1).cell_voltages[0].is_nan());
    assert!(f.get(2).pack_voltage.is_nan() && f.get(2).temperatures[0].is_nan());
    assert_eq!(f.get(2).alarm_flags, Some(1024));
    assert_eq!(f.line(2), 4);
    // Lines 2 and 3 share a timestamp: aggregation names both.
    let e = aggregate(f, &DailyConfig::default(), Some(Path::new("f.csv"))).unwrap_err();
    assert!(e.to_string().contains("lines 2 and 3"), "{e}");
}

#[test]
fn frame_csv_errors() {
    let cases = [
        (
            format!("{FH}\nV1,17040672x,7.4,1,55,3.7,3.71,20,\n"),
            "f.csv, line 2, column 2 (timestamp): '17040672x' is neither",
        ),
        (
            format!("{FH}\nV1,1,7.4,1,55,3.7,oops,20,\n"),
            "line 2, column 7 (cell_v_2): 'oops' is not a number",
        ),
        (
            format!("{FH}\nV1,1,7.4,1,55,3.7,3.7,20,0x1FFFFFFFF\n"),
            "column 9 (alarm_flags)",
        ),
        (
            format!("{FH}\nV1,1,7.4,1,55,3.7\n"),
            "line 2: expected 9 fields, found 6",
        ),
        (
            "vin,timestamp,pack_voltage,pack_current,soc,cell_v_1,cell_v_3,temp_1\n".to_string(),
            "expected 'vin,timestamp,pack_voltage,pack_current,soc,cell_v_1,cell_v_2,temp_1'",
        ),
        (
            "vin,timestamp,pack_voltage,pack_current,soc,temp_1\n".to_string(),
            "header: expected",
        ),
    ];
    for (text, want) in cases {
        let e = frames_csv(&text, ReadMode::Strict).unwrap_err().to_string();
        assert!(e.contains(want), "expected «{want}» in «{e}»");
    }
    let text = format!("{FH}\nV1,1,7.4,1,55,3.7,3.7,20,\nV1,x,7.4,1,55,3.7,3.7,20,\n");
    let r = frames_csv(&text, ReadMode::Lenient).unwrap();
    assert_eq!((r.read, r.accepted, r.rejects[0].line), (2, 1, 3));
}

fn sample_frames() -> Frames {
    let mut f = Frames::new();
    let cells = [[3.701, 3.702, f64::NAN], [3.9, 3.8, 3.85]];
    let temps = [[20.0, 21.0], [f64::NAN, 25.0]];
    for i in 0..5u32 {
        let k = (i % 2) as usize;
        f.push(
            FrameRef {
                vin: if i < 3 { "LA" } else { "LB" },
                timestamp_ms: 1_704_067_200_000 + i as i64 * 43_200_000,
                pack_voltage: 11.1 + i as f64,
                pack_current: -1.5 * i as f64,
                soc: if i == 2 { f64::NAN } else { 50.0 + i as f64 },
                cell_voltages: &cells[k],
                temperatures: &temps[k],
                alarm_flags: if i == 1 { Some(0x400) } else { None },
            },
            i as u64 + 2,
        );
    }
    f
}

fn same_frames(a: &Frames, b: &Frames) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b.iter()) {
        let bits = |f: &FrameRef<'_>| {
            let mut v: Vec<u64> = vec![
                f.pack_voltage.to_bits(),
                f.pack_current.to_bits(),
                f.soc.to_bits(),
            ];
            v.extend(
                f.cell_voltages
                    .iter()
                    .chain(f.temperatures)
                    .map(|z| z.to_bits()),
            );
            v
        };
        assert_eq!(
            (x.vin, x.timestamp_ms, x.alarm_flags),
            (y.vin, y.timestamp_ms, y.alarm_flags)
        );
        assert_eq!(bits(&x), bits(&y));
    }
}

#[test]
fn frames_round_trip_through_csv_and_parquet() {
    let f = sample_frames();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("f.csv");
    io::write_frame_csv(&csv, &f).unwrap();
    same_frames(
        &io::read_frame_csv(&csv, ReadMode::Strict).unwrap().data,
        &f,
    );
    let pq = dir.path().join("f.parquet");
    io::write_frames_parquet(&pq, &f).unwrap();
    let back = io::read_frames_parquet(&pq, ReadMode::Strict).unwrap();
    assert_eq!((back.read, back.accepted), (5, 5));
    same_frames(&back.data, &f);
    assert_eq!(back.data.line(4), 5, "Parquet rows are numbered from 1");
    // And the daily tables agree.
    let cfg = DailyConfig::default();
    assert_eq!(
        aggregate(&back.data, &cfg, None).unwrap(),
        aggregate(&f, &cfg, None).unwrap()
    );
}

#[test]
fn daily_parquet_round_trip() {
    let t = aggregate(&sample_frames(), &DailyConfig::default(), None).unwrap();
    assert!(t.rows.iter().any(|r| r.label.is_nan() || r.label == 1.0));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.parquet");
    io::write_daily_parquet(&p, &t).unwrap();
    assert_eq!(io::read_daily_parquet(&p).unwrap(), t);
}

#[test]
fn parquet_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("junk.parquet");
    std::fs::write(&p, b"PAR1 this is not parquet").unwrap();
    let e = io::read_frames_parquet(&p, ReadMode::Strict).unwrap_err();
    assert!(matches!(e, BmsError::Parquet { .. }), "{e}");
    assert!(e.to_string().contains("junk.parquet"), "{e}");
    // A daily Parquet file is not a frames file: the missing column is named.
    let d = dir.path().join("d.parquet");
    io::write_daily_parquet(
        &d,
        &aggregate(&sample_frames(), &DailyConfig::default(), None).unwrap(),
    )
    .unwrap();
    let e = io::read_frames_parquet(&d, ReadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(e.contains("a column named 'vin'"), "{e}");
    let e =
        io::read_frames_parquet(&dir.path().join("missing.parquet"), ReadMode::Strict).unwrap_err();
    assert!(matches!(e, BmsError::Io { .. }), "{e}");
}

/// Found by fuzzing (fuzz targets `daily_parquet`, `frames_parquet`): malformed files on
/// which the parquet crate panics instead of failing ("Decoder for dict should have been
/// set"; an index out of bounds in its byte-stream-split decoder) are errors naming the file.
#[test]
fn malformed_parquet_on_which_the_decoder_panics_is_an_error() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let daily = data.join("fuzz-daily-dictionary-page-missing.parquet");
    let e = io::read_daily_parquet(&daily).unwrap_err();
    assert!(matches!(e, BmsError::Parquet { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("fuzz-daily-dictionary-page-missing.parquet"),
        "{text}"
    );
    assert!(
        text.contains("the file is malformed (the Parquet decoder failed: "),
        "{text}"
    );
    let frames = data.join("fuzz-frames-byte-stream-split-short.parquet");
    for mode in [ReadMode::Strict, ReadMode::Lenient] {
        let e = io::read_frames_parquet(&frames, mode).unwrap_err();
        assert!(matches!(e, BmsError::Parquet { .. }), "{e:?}");
        assert!(e.to_string().contains("the file is malformed"), "{e}");
    }
    // Found by fuzzing (`frames_parquet`, a timeout): a 2 KB file whose footer metadata
    // declares element counts far beyond its bytes, which the parquet crate spent 6 s
    // skipping; refused by the footer check instead, before the crate decodes it.
    let bools = data.join("fuzz-frames-footer-bool-list.parquet");
    let e = io::read_frames_parquet(&bools, ReadMode::Lenient).unwrap_err();
    assert!(
        e.to_string().contains("its footer metadata declares a "),
        "{e}"
    );
    // Files whose footers are well formed pass the check (their faults are further in).
    for ok in [
        "fuzz-daily-dictionary-page-missing.parquet",
        "fuzz-frames-byte-stream-split-short.parquet",
    ] {
        bms_core::io::parquet::check_footer(&data.join(ok)).unwrap();
    }
}

#[test]
fn failed_writes_leave_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.csv");
    std::fs::write(&p, "previous").unwrap();
    // No frames: the writer refuses, and the old content stays.
    assert!(io::write_frame_csv(&p, &Frames::new()).is_err());
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "previous");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary file cleaned up");
}

#[test]
fn parquet_and_model_errors_keep_their_source() {
    use std::error::Error as _;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, b"PAR1 this is not a Parquet file PAR1").unwrap();
    let e = io::read_daily_parquet(&bad).unwrap_err();
    assert!(matches!(e, BmsError::Parquet { .. }), "{e:?}");
    let source = e.source().expect("the Parquet error is kept");
    assert!(
        source
            .downcast_ref::<parquet::errors::ParquetError>()
            .is_some(),
        "{source:?}"
    );
    // The message shows the source's text too (what every surface prints).
    assert!(e.to_string().contains(&source.to_string()), "{e}");

    let e = bms_core::Model::from_bytes(b"\x00\x01 not a model").unwrap_err();
    assert!(matches!(e, BmsError::Model { .. }), "{e:?}");
    let source = e.source().expect("the decoding error is kept");
    assert!(e.to_string().contains(&source.to_string()), "{e}");
}

#[test]
fn a_byte_order_mark_opening_a_file_is_skipped() {
    let daily_text = format!("{REFERENCE_HEADER}\nV1,2024-01-01,370,1,3.9,3.8,25,24,0.0\n");
    let plain = daily(&daily_text, ReadMode::Strict).unwrap();
    let with_bom = daily(&format!("\u{feff}{daily_text}"), ReadMode::Strict).unwrap();
    assert_eq!(with_bom.data.rows, plain.data.rows);
    assert_eq!(with_bom.read, 1);

    let values = vec!["0.5"; 84].join(",");
    let line = format!("\u{feff}V1,2024-03-01,{values}\nV2,2024-03-02,{values}\n");
    let options = BatchOptions {
        width: 84,
        labels: false,
        mode: ReadMode::Strict,
    };
    let r = read_batch_csv_from(line.as_bytes(), None, options).unwrap();
    assert_eq!(
        r.data.keys[0].vin, "V1",
        "the mark is not part of the first VIN"
    );
    assert_eq!(r.data.keys[1].vin, "V2");
    // Only the first line's: a mark elsewhere is data (and here an unusable VIN is kept
    // as it is, not silently changed).
    let later = format!("V1,2024-03-01,{values}\n\u{feff}V2,2024-03-02,{values}\n");
    let r = read_batch_csv_from(later.as_bytes(), None, options).unwrap();
    assert_eq!(r.data.keys[1].vin, "\u{feff}V2");
}

#[test]
fn temporaries_carry_the_id_of_the_process_that_writes_them() {
    let prefix = io::temp_prefix();
    assert_eq!(
        io::temp_owner(&format!("{prefix}Ab3x9q")),
        Some(std::process::id())
    );
    assert_eq!(io::temp_owner(".bms-old-42"), Some(42));
    for other in [
        ".bms-tmp-Ab3x9q",
        ".bms-tmp--1-x",
        "results.sqlite",
        ".bms-old-",
        ".bms-lock",
    ] {
        assert_eq!(io::temp_owner(other), None, "{other}");
    }
}
