//! Parquet as other tools write it (issue 20 §6): what pandas makes of a `category` VIN
//! (a dictionary column) and of a `datetime64` Date (a timestamp) is read like the plain
//! columns bms writes; a timestamp or date64 Date that is not a whole day is refused with
//! its row and value; and a number outside the f32 a model reads (±inf, 1e39) is refused
//! with its file, column and row, like the CSV readers refuse `inf` (SPEC §4).

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{LargeStringDictionaryBuilder, StringDictionaryBuilder};
use arrow_array::types::{
    ArrowDictionaryKeyType, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, Date64Array, Float32Array, Float64Array, LargeStringArray, RecordBatch,
    StringArray, StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray,
};
use arrow_schema::{DataType, Field, Schema};
use bms_core::daily::{DailyColumn, DailyRow, DailyTable, day_of_date};
use bms_core::io::{self, ReadMode};
use bms_core::{FrameRef, Frames};
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const DAY_S: i64 = 86_400;

/// Writes one record batch of `cols` (any Arrow types, all nullable) to `path`.
fn write_cols(path: &Path, cols: &[(String, ArrayRef)]) {
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        cols.iter().map(|(_, a)| a.clone()).collect(),
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// `cols` with column `name` replaced by `a`.
fn with(cols: &[(String, ArrayRef)], name: &str, a: ArrayRef) -> Vec<(String, ArrayRef)> {
    assert_eq!(cols.iter().filter(|(n, _)| n == name).count(), 1, "{name}");
    cols.iter()
        .map(|(n, x)| (n.clone(), if n == name { a.clone() } else { x.clone() }))
        .collect()
}

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap()
}

/// Four rows, VINs interleaved (so a dictionary's keys are not in order), a date before
/// 1970 (negative day numbers), NaN values and all three labels.
fn sample_table() -> DailyTable {
    let days = [
        ("VIN-A", d(2024, 3, 1)),
        ("VIN-B", d(2024, 3, 1)),
        ("VIN-A", d(1969, 12, 31)),
        ("VIN-B", d(2024, 2, 29)),
    ];
    let rows = days
        .iter()
        .enumerate()
        .map(|(i, &(vin, date))| {
            let mut r = DailyRow::empty(vin, date);
            for (k, c) in DailyColumn::ALL.iter().enumerate() {
                let v = if (i + k) % 5 == 0 {
                    f64::NAN
                } else {
                    350.0 + i as f64 * 0.125 - k as f64 * 3.7
                };
                r.set(*c, v);
            }
            r.label = [0.0, 1.0, f64::NAN, 0.0][i];
            r
        })
        .collect();
    DailyTable { rows }
}

/// The columns of the one record batch of `path`, as the parquet crate reads them.
fn read_cols(path: &Path) -> Vec<(String, ArrayRef)> {
    let mut r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batch = r.next().unwrap().unwrap();
    assert!(r.next().is_none());
    let schema = batch.schema();
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| (f.name().clone(), a.clone()))
        .collect()
}

/// The Arrow type the parquet crate reads column `name` of `path` as.
fn read_type(path: &Path, name: &str) -> DataType {
    read_cols(path)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
        .data_type()
        .clone()
}

/// `vins` as a dictionary with keys `K` over utf8 (`large` false) or large_utf8 values.
fn dict<K: ArrowDictionaryKeyType>(vins: &[&str], large: bool) -> ArrayRef {
    if large {
        // A value no row uses first, so that the keys are not simply 0..n.
        let unused = LargeStringArray::from(vec!["UNUSED"]);
        let mut b =
            LargeStringDictionaryBuilder::<K>::new_with_dictionary(vins.len(), &unused).unwrap();
        for v in vins {
            b.append(v).unwrap();
        }
        Arc::new(b.finish())
    } else {
        let mut b = StringDictionaryBuilder::<K>::new();
        for v in vins {
            b.append(v).unwrap();
        }
        Arc::new(b.finish())
    }
}

fn vins(t: &DailyTable) -> Vec<&str> {
    t.rows.iter().map(|r| r.vin.as_str()).collect()
}

/// Every VIN column pandas or pyarrow may write: a `category` (a dictionary of any integer
/// key over utf8 or large_utf8), large_utf8 and utf8_view.
fn vin_variants(v: &[&str]) -> Vec<(&'static str, ArrayRef)> {
    vec![
        ("dictionary<int8, utf8>", dict::<Int8Type>(v, false)),
        ("dictionary<int16, utf8>", dict::<Int16Type>(v, false)),
        ("dictionary<int32, utf8>", dict::<Int32Type>(v, false)),
        ("dictionary<int64, utf8>", dict::<Int64Type>(v, false)),
        ("dictionary<uint8, utf8>", dict::<UInt8Type>(v, false)),
        ("dictionary<uint16, utf8>", dict::<UInt16Type>(v, false)),
        ("dictionary<uint32, utf8>", dict::<UInt32Type>(v, false)),
        ("dictionary<uint64, utf8>", dict::<UInt64Type>(v, false)),
        ("dictionary<int8, large_utf8>", dict::<Int8Type>(v, true)),
        ("dictionary<int32, large_utf8>", dict::<Int32Type>(v, true)),
        ("large_utf8", Arc::new(LargeStringArray::from(v.to_vec()))),
        ("utf8_view", Arc::new(StringViewArray::from(v.to_vec()))),
    ]
}

#[test]
fn daily_dictionary_vin_reads_like_utf8() {
    let t = sample_table();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.parquet");
    io::write_daily_parquet(&plain, &t).unwrap();
    assert_eq!(read_type(&plain, "VIN"), DataType::Utf8);
    assert_eq!(io::read_daily_parquet(&plain).unwrap(), t);
    let cols = read_cols(&plain);
    for (what, vin) in vin_variants(&vins(&t)) {
        let p = dir.path().join("variant.parquet");
        write_cols(&p, &with(&cols, "VIN", vin.clone()));
        // The file really holds that type (the Arrow schema is stored with it).
        assert_eq!(&read_type(&p, "VIN"), vin.data_type(), "{what}");
        match io::read_daily_parquet(&p) {
            Ok(got) => assert_eq!(got, t, "{what}"),
            Err(e) => panic!("{what}: {e}"),
        }
    }
    // A null in a dictionary VIN is a missing VIN, named like any other.
    let mut b = StringDictionaryBuilder::<Int8Type>::new();
    b.append("VIN-A").unwrap();
    b.append_null();
    b.append("VIN-A").unwrap();
    b.append("VIN-B").unwrap();
    let p = dir.path().join("null.parquet");
    write_cols(&p, &with(&cols, "VIN", Arc::new(b.finish())));
    let e = io::read_daily_parquet(&p).unwrap_err().to_string();
    assert!(
        e.contains("null.parquet, line 2, column VIN: missing or empty VIN"),
        "{e}"
    );
}

/// VIN, timestamp, cells, probes and alarm flags of a sample frame.
type FrameRow = (&'static str, i64, [f64; 3], [f64; 2], Option<u32>);

fn sample_frames() -> Frames {
    let mut f = Frames::new();
    let rows: [FrameRow; 4] = [
        (
            "VIN-A",
            1_709_251_200_000,
            [3.61, 3.62, 3.6],
            [25.0, 26.5],
            Some(0),
        ),
        (
            "VIN-B",
            1_709_251_200_000,
            [3.5, 3.55, 3.52],
            [24.0, 24.5],
            None,
        ),
        (
            "VIN-A",
            1_709_251_210_000,
            [3.6, 3.7, 3.65],
            [25.5, 27.0],
            Some(16),
        ),
        (
            "VIN-B",
            1_709_251_210_000,
            [3.51, 3.5, 3.53],
            [24.1, 24.0],
            Some(1),
        ),
    ];
    for (i, (vin, ts, cells, temps, flags)) in rows.iter().enumerate() {
        f.push(
            FrameRef {
                vin,
                timestamp_ms: *ts,
                pack_voltage: 345.5 + i as f64,
                pack_current: -12.25 * i as f64,
                soc: 80.0 - i as f64,
                cell_voltages: cells,
                temperatures: temps,
                alarm_flags: *flags,
            },
            i as u64 + 1,
        );
    }
    f
}

#[test]
fn frames_dictionary_vin_reads_like_utf8() {
    let f = sample_frames();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.parquet");
    io::write_frames_parquet(&plain, &f).unwrap();
    assert_eq!(read_type(&plain, "vin"), DataType::Utf8);
    let back = io::read_frames_parquet(&plain, ReadMode::Strict).unwrap();
    assert_eq!(back.data, f);
    let cols = read_cols(&plain);
    let v: Vec<&str> = f.iter().map(|x| x.vin).collect();
    for (what, vin) in vin_variants(&v) {
        let p = dir.path().join("variant.parquet");
        write_cols(&p, &with(&cols, "vin", vin.clone()));
        assert_eq!(&read_type(&p, "vin"), vin.data_type(), "{what}");
        for mode in [ReadMode::Strict, ReadMode::Lenient] {
            match io::read_frames_parquet(&p, mode) {
                Ok(got) => {
                    assert_eq!((got.read, got.accepted), (4, 4), "{what}");
                    assert_eq!(got.data, f, "{what}");
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }
}

/// Day numbers (days since 1970-01-01) of the sample's dates.
fn days(t: &DailyTable) -> Vec<i64> {
    t.rows.iter().map(|r| day_of_date(r.date)).collect()
}

#[test]
fn daily_timestamp_and_date64_dates_read_like_date32() {
    let t = sample_table();
    let dn = days(&t);
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.parquet");
    io::write_daily_parquet(&plain, &t).unwrap();
    assert_eq!(read_type(&plain, "Date"), DataType::Date32);
    let cols = read_cols(&plain);
    let secs = |offset_s: i64| dn.iter().map(move |d| d * DAY_S - offset_s);
    let iso: Vec<String> = t.rows.iter().map(|r| r.date.to_string()).collect();
    let iso: Vec<&str> = iso.iter().map(String::as_str).collect();
    let variants: Vec<(&str, ArrayRef)> = vec![
        (
            // pandas datetime64[ns]
            "timestamp[ns]",
            Arc::new(TimestampNanosecondArray::from_iter_values(
                secs(0).map(|s| s * 1_000_000_000),
            )),
        ),
        (
            "timestamp[us]",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                secs(0).map(|s| s * 1_000_000),
            )),
        ),
        (
            // pandas datetime64[ms, UTC]
            "timestamp[ms, UTC]",
            Arc::new(
                TimestampMillisecondArray::from_iter_values(secs(0).map(|s| s * 1000))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "timestamp[ns, Etc/UTC]",
            Arc::new(
                TimestampNanosecondArray::from_iter_values(secs(0).map(|s| s * 1_000_000_000))
                    .with_timezone("Etc/UTC"),
            ),
        ),
        (
            // Local midnight at +08:00 is 16:00 UTC the day before.
            "timestamp[s, +08:00]",
            Arc::new(
                TimestampSecondArray::from_iter_values(secs(8 * 3600)).with_timezone("+08:00"),
            ),
        ),
        (
            "timestamp[ns, -05:30]",
            Arc::new(
                TimestampNanosecondArray::from_iter_values(
                    secs(-(5 * 3600 + 1800)).map(|s| s * 1_000_000_000),
                )
                .with_timezone("-05:30"),
            ),
        ),
        (
            "date64",
            Arc::new(Date64Array::from_iter_values(secs(0).map(|s| s * 1000))),
        ),
        ("utf8", Arc::new(StringArray::from(iso.clone()))),
        ("dictionary<int8, utf8>", dict::<Int8Type>(&iso, false)),
    ];
    for (what, date) in variants {
        let p = dir.path().join("variant.parquet");
        write_cols(&p, &with(&cols, "Date", date.clone()));
        // date64 is stored as a Parquet DATE (whole days) and read back as date64 only
        // through the stored Arrow schema; either way it must read as the same days.
        let stored = read_type(&p, "Date");
        assert!(
            &stored == date.data_type() || what == "date64",
            "{what}: {stored}"
        );
        match io::read_daily_parquet(&p) {
            Ok(got) => assert_eq!(got, t, "{what}"),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// The error of reading a daily file whose Date column is `date`.
fn date_error(date: ArrayRef) -> String {
    let t = sample_table();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.parquet");
    io::write_daily_parquet(&plain, &t).unwrap();
    let p = dir.path().join("d.parquet");
    write_cols(&p, &with(&read_cols(&plain), "Date", date));
    io::read_daily_parquet(&p).unwrap_err().to_string()
}

#[test]
fn a_date_that_is_not_a_whole_day_is_refused_naming_row_and_value() {
    let dn = days(&sample_table());
    let ns = |extra: [i64; 4]| -> Vec<i64> {
        dn.iter()
            .zip(extra)
            .map(|(d, x)| d * DAY_S * 1_000_000_000 + x)
            .collect()
    };
    // 06:30 on row 2 of a naive timestamp[ns]: refused, not truncated to the day.
    let six_thirty = (6 * 3600 + 1800) * 1_000_000_000;
    let e = date_error(Arc::new(TimestampNanosecondArray::from(ns([
        0, six_thirty, 0, 0,
    ]))));
    let raw = dn[1] * DAY_S * 1_000_000_000 + six_thirty;
    assert!(e.contains("d.parquet, line 2, column Date"), "{e}");
    assert!(e.contains("row 2 (1-based)"), "{e}");
    assert!(e.contains(&format!("{raw} ns")), "{e}");
    assert!(e.contains("2024-03-01 06:30:00"), "{e}");
    assert!(e.contains("not midnight"), "{e}");
    // One nanosecond off is off.
    let e = date_error(Arc::new(TimestampNanosecondArray::from(ns([0, 0, 0, 1]))));
    assert!(e.contains("row 4 (1-based)"), "{e}");
    assert!(e.contains("2024-02-29 00:00:00.000000001"), "{e}");
    // UTC midnight is 08:00 at +08:00: refused, and the message says in which zone.
    let e = date_error(Arc::new(
        TimestampSecondArray::from(dn.iter().map(|d| d * DAY_S).collect::<Vec<_>>())
            .with_timezone("+08:00"),
    ));
    assert!(e.contains("row 1 (1-based)"), "{e}");
    assert!(e.contains("2024-03-01 08:00:00 at +08:00"), "{e}");
    // UTC midnight read at UTC is fine, but 23:00 UTC is not.
    let e = date_error(Arc::new(
        TimestampMillisecondArray::from(
            dn.iter()
                .enumerate()
                .map(|(i, d)| d * DAY_S * 1000 - if i == 2 { 3_600_000 } else { 0 })
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC"),
    ));
    assert!(e.contains("row 3 (1-based)"), "{e}");
    assert!(e.contains("1969-12-30 23:00:00 at UTC"), "{e}");
    // date64 must be whole days too.
    let e = date_error(Arc::new(Date64Array::from(
        dn.iter()
            .enumerate()
            .map(|(i, d)| d * DAY_S * 1000 + if i == 1 { 1 } else { 0 })
            .collect::<Vec<_>>(),
    )));
    assert!(e.contains("d.parquet, line 2, column Date"), "{e}");
    assert!(e.contains("row 2 (1-based)"), "{e}");
    assert!(e.contains("2024-03-01 00:00:00.001"), "{e}");
    // A named zone other than UTC cannot be resolved without a zone database: refused by
    // name rather than read at the wrong offset.
    let e = date_error(Arc::new(
        TimestampNanosecondArray::from(ns([0; 4])).with_timezone("Asia/Shanghai"),
    ));
    assert!(e.contains("d.parquet"), "{e}");
    assert!(e.contains("Asia/Shanghai"), "{e}");
    // A string Date follows the CSV rule: exactly YYYY-MM-DD of the calendar.
    let e = date_error(Arc::new(StringArray::from(vec![
        "2024-03-01",
        "2024-3-1",
        "1969-12-31",
        "2024-02-29",
    ])));
    assert!(
        e.contains(
            "line 2, column Date: row 2 (1-based), Date: '2024-3-1' is not a YYYY-MM-DD date"
        ),
        "{e}"
    );
    // A null Date is missing.
    let e = date_error(Arc::new(TimestampNanosecondArray::from(vec![
        Some(ns([0; 4])[0]),
        None,
        None,
        None,
    ])));
    assert!(e.contains("line 2, column Date: missing"), "{e}");
}

#[test]
fn daily_values_outside_f32_are_refused_naming_file_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.parquet");
    let cases = [
        (
            DailyColumn::TotalCurrent,
            f64::INFINITY,
            "inf is not a finite number",
        ),
        (
            DailyColumn::TotalCurrent,
            f64::NEG_INFINITY,
            "-inf is not a finite number",
        ),
        (
            DailyColumn::SpreadMax,
            1e39,
            "1e39 is beyond the range of the 32-bit floats",
        ),
        (DailyColumn::MaxTemperature, -1e39, "-1e39 is beyond"),
        // The shortest decimal above f32::MAX that rounds to infinity as an f32.
        (DailyColumn::Frames, 3.4028236e38, "3.4028236e38 is beyond"),
    ];
    for (col, v, text) in cases {
        let mut t = sample_table();
        t.rows[2].set(col, v);
        io::write_daily_parquet(&p, &t).unwrap();
        let e = io::read_daily_parquet(&p).unwrap_err().to_string();
        let name = col.name();
        assert!(
            e.contains(&format!("d.parquet, line 3, column {name}: ")),
            "{e}"
        );
        assert!(
            e.contains(&format!("row 3 (1-based), {name}: {text}")),
            "{e}"
        );
    }
    // A float column holding an infinity is refused the same way.
    let t = sample_table();
    io::write_daily_parquet(&p, &t).unwrap();
    let cols = read_cols(&p);
    let f32s = Float32Array::from(vec![1.0, 2.0, 3.0, f32::INFINITY]);
    write_cols(&p, &with(&cols, "TotalVoltage", Arc::new(f32s)));
    let e = io::read_daily_parquet(&p).unwrap_err().to_string();
    assert!(
        e.contains(
            "line 4, column TotalVoltage: row 4 (1-based), TotalVoltage: inf is not a finite number"
        ),
        "{e}"
    );
    // The largest f32 either way is a number; NaN and null are missing.
    let mut t = sample_table();
    t.rows[0].set(DailyColumn::TotalVoltage, f64::from(f32::MAX));
    t.rows[1].set(DailyColumn::TotalVoltage, -f64::from(f32::MAX));
    t.rows[2].set(DailyColumn::TotalVoltage, f64::NAN);
    io::write_daily_parquet(&p, &t).unwrap();
    assert_eq!(io::read_daily_parquet(&p).unwrap(), t);
    let nulls = Float64Array::from(vec![Some(1.0), None, Some(3.0), None]);
    write_cols(&p, &with(&read_cols(&p), "TotalVoltage", Arc::new(nulls)));
    let got = io::read_daily_parquet(&p).unwrap();
    assert!(got.rows[1].get(DailyColumn::TotalVoltage).is_nan());
    assert!(got.rows[3].get(DailyColumn::TotalVoltage).is_nan());
}

#[test]
fn frame_values_outside_f32_are_refused_strict_and_rejected_lenient() {
    let good = sample_frames();
    // Rows 2 to 5 (1-based) each carry one value a model cannot read; rows 1 and 6 are
    // fine (row 6 with NaN readings, which are missing, and the largest f32).
    let mut f = Frames::new();
    let g = |i: usize| good.get(i % good.len());
    let push = |f: &mut Frames, r: FrameRef<'_>, line: u64| f.push(r, line);
    push(&mut f, g(0), 1);
    push(
        &mut f,
        FrameRef {
            pack_voltage: f64::INFINITY,
            ..g(1)
        },
        2,
    );
    let cells = [3.6, 1e39, 3.6];
    push(
        &mut f,
        FrameRef {
            cell_voltages: &cells,
            ..g(2)
        },
        3,
    );
    let temps = [f64::NEG_INFINITY, 25.0];
    push(
        &mut f,
        FrameRef {
            temperatures: &temps,
            ..g(3)
        },
        4,
    );
    push(
        &mut f,
        FrameRef {
            soc: -1e39,
            timestamp_ms: 1_709_251_220_000,
            ..g(0)
        },
        5,
    );
    let fine_cells = [f64::NAN, f64::from(f32::MAX), -f64::from(f32::MAX)];
    push(
        &mut f,
        FrameRef {
            pack_current: f64::NAN,
            cell_voltages: &fine_cells,
            timestamp_ms: 1_709_251_220_000,
            ..g(1)
        },
        6,
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.parquet");
    io::write_frames_parquet(&p, &f).unwrap();
    let e = io::read_frames_parquet(&p, ReadMode::Strict)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "f.parquet, line 2, column pack_voltage: row 2 (1-based), pack_voltage: inf is not a finite number"
        ),
        "{e}"
    );
    let r = io::read_frames_parquet(&p, ReadMode::Lenient).unwrap();
    assert_eq!((r.read, r.accepted), (6, 2));
    let rejects: Vec<(u64, &str)> = r
        .rejects
        .iter()
        .map(|x| (x.line, x.reason.as_str()))
        .collect();
    let beyond = "is beyond the range of the 32-bit floats models read (±3.4028235e38)";
    let want = [
        (
            2,
            "row 2 (1-based), pack_voltage: inf is not a finite number".to_owned(),
        ),
        (
            3,
            format!("row 3 (1-based), cell_voltages item 2 of 3: 1e39 {beyond}"),
        ),
        (
            4,
            "row 4 (1-based), temperatures item 1 of 2: -inf is not a finite number".to_owned(),
        ),
        (5, format!("row 5 (1-based), soc: -1e39 {beyond}")),
    ];
    assert_eq!(rejects.len(), want.len(), "{rejects:?}");
    for ((line, reason), (wl, wr)) in rejects.iter().zip(&want) {
        assert_eq!((*line, *reason), (*wl, wr.as_str()));
    }
    assert_eq!(r.data.line(0), 1);
    assert_eq!(r.data.line(1), 6);
    let kept = r.data.get(1);
    assert!(kept.pack_current.is_nan() && kept.cell_voltages[0].is_nan());
    assert_eq!(&kept.cell_voltages[1..], &fine_cells[1..]);
}

#[test]
fn daily_parquet_round_trip_stays_exact() {
    let mut t = sample_table();
    // Values an f32 cannot hold exactly, the extremes of its range and a subnormal f64.
    t.rows[0].set(DailyColumn::TotalVoltage, 0.1);
    t.rows[0].set(DailyColumn::TotalCurrent, f64::from(f32::MAX));
    t.rows[1].set(DailyColumn::TotalCurrent, -f64::from(f32::MAX));
    t.rows[1].set(DailyColumn::SpreadMean, 5e-324);
    t.rows[3].set(DailyColumn::SocDeviationMean, -0.0);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.parquet");
    io::write_daily_parquet(&p, &t).unwrap();
    let back = io::read_daily_parquet(&p).unwrap();
    assert_eq!(back, t);
    for (a, b) in back.rows.iter().zip(&t.rows) {
        let bits = |r: &DailyRow| {
            let mut v: Vec<u64> = r.values.iter().map(|x| x.to_bits()).collect();
            v.push(r.label.to_bits());
            v
        };
        assert_eq!(bits(a), bits(b), "{} {}", a.vin, a.date);
    }
}
