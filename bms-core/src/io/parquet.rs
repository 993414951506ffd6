//! Parquet for frames (SPEC §2, list columns) and daily tables.
//!
//! Frames: `vin: utf8`, `timestamp: int64` (ms since epoch, UTC; a `timestamp` logical type
//! of any unit is also read), `pack_voltage`, `pack_current`, `soc: double`,
//! `cell_voltages: list<double>`, `temperatures: list<double>`, `alarm_flags: uint32`
//! (nullable; optional when reading). Readers also accept `float` for every number and
//! `large_list`; a null reading is NaN. Frames are written as doubles so that a write/read
//! round trip is exact.
//!
//! Daily: `VIN: utf8`, `Date: date32`, the six reference columns, `Label`, then the
//! extended columns, all `double`. When reading, `Date` may also be `date64` or a
//! `timestamp` of any unit (what pandas writes for `datetime64`), naive, UTC or at a fixed
//! offset, as long as it is exactly midnight (a whole day, never truncated to one), or
//! `YYYY-MM-DD` strings.
//!
//! Both readers take a VIN (and string dates) as `utf8`, `large_utf8`, `utf8_view` or a
//! dictionary of them (what pandas writes for a `category` column), and read a number as
//! SPEC §4 says: missing (NaN or null) or finite within the `f32` range a model reads;
//! `±inf` or `1e39` is an error naming file, column and row (a reject in lenient mode).

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type};
use arrow_array::{
    Array, ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{ReadMode, ReadReport, RejectSink, check_range, parse_date};
use crate::daily::{
    DailyColumn, DailyRow, DailyTable, EXTENDED_COLUMNS, N_DAILY_COLUMNS, REFERENCE_COLUMNS,
    UtcOffset, date_of_day, day_of_date,
};
use crate::error::{BmsError, Location, Result};
use crate::frame::{FrameRef, Frames};

const BATCH_ROWS: usize = 65_536;

fn pq_err(file: &Path, e: impl std::error::Error + Send + Sync + 'static) -> BmsError {
    BmsError::Parquet {
        file: Some(file.to_path_buf()),
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

fn frames_schema() -> SchemaRef {
    let item = || Arc::new(Field::new("item", DataType::Float64, true));
    Arc::new(Schema::new(vec![
        Field::new("vin", DataType::Utf8, false),
        Field::new("timestamp", DataType::Int64, false),
        Field::new("pack_voltage", DataType::Float64, true),
        Field::new("pack_current", DataType::Float64, true),
        Field::new("soc", DataType::Float64, true),
        Field::new("cell_voltages", DataType::List(item()), false),
        Field::new("temperatures", DataType::List(item()), false),
        Field::new("alarm_flags", DataType::UInt32, true),
    ]))
}

fn props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .build()
}

/// A Parquet file written under a temporary name and renamed into place by `finish`; a
/// target that exists and is not a regular file is refused (SPEC §4), when created and
/// again before the rename.
struct AtomicParquet {
    target: PathBuf,
    tmp: tempfile::NamedTempFile,
    writer: ArrowWriter<File>,
}

impl AtomicParquet {
    fn create(target: &Path, schema: SchemaRef) -> Result<Self> {
        super::check_output_file(target)?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(&super::temp_prefix())
            .tempfile_in(dir)
            .map_err(|e| BmsError::io(target, e))?;
        let handle = tmp
            .as_file()
            .try_clone()
            .map_err(|e| BmsError::io(target, e))?;
        let writer =
            ArrowWriter::try_new(handle, schema, Some(props())).map_err(|e| pq_err(target, e))?;
        Ok(AtomicParquet {
            target: target.to_path_buf(),
            tmp,
            writer,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| pq_err(&self.target, e))
    }

    fn finish(self) -> Result<()> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| pq_err(&self.target, e))?;
        file.sync_all().map_err(|e| BmsError::io(&self.target, e))?;
        super::check_output_file(&self.target)?;
        self.tmp
            .persist(&self.target)
            .map_err(|e| BmsError::io(&self.target, e.error))?;
        Ok(())
    }
}

/// Streams frames into a Parquet file in row groups; nothing appears at `path` until
/// [`FramesParquetWriter::finish`].
pub struct FramesParquetWriter {
    out: AtomicParquet,
}

impl FramesParquetWriter {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(FramesParquetWriter {
            out: AtomicParquet::create(path, frames_schema())?,
        })
    }

    /// Writes frames (any number; split into batches internally).
    pub fn write<'a>(&mut self, frames: impl IntoIterator<Item = FrameRef<'a>>) -> Result<()> {
        let mut it = frames.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<FrameRef<'a>> = it.by_ref().take(BATCH_ROWS).collect();
            let batch = frames_batch(&chunk);
            self.out.write(&batch)?;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        self.out.finish()
    }
}

fn frames_batch(chunk: &[FrameRef<'_>]) -> RecordBatch {
    let vin = StringArray::from_iter_values(chunk.iter().map(|f| f.vin));
    let ts = Int64Array::from_iter_values(chunk.iter().map(|f| f.timestamp_ms));
    let pv = Float64Array::from_iter_values(chunk.iter().map(|f| f.pack_voltage));
    let pi = Float64Array::from_iter_values(chunk.iter().map(|f| f.pack_current));
    let soc = Float64Array::from_iter_values(chunk.iter().map(|f| f.soc));
    let list = |cells: bool| {
        let mut b = ListBuilder::new(Float64Builder::new()).with_field(Field::new(
            "item",
            DataType::Float64,
            true,
        ));
        for f in chunk {
            b.values().append_slice(if cells {
                f.cell_voltages
            } else {
                f.temperatures
            });
            b.append(true);
        }
        b.finish()
    };
    let cells = list(true);
    let temps = list(false);
    let flags: UInt32Array = chunk.iter().map(|f| f.alarm_flags).collect();
    RecordBatch::try_new(
        frames_schema(),
        vec![
            Arc::new(vin),
            Arc::new(ts),
            Arc::new(pv),
            Arc::new(pi),
            Arc::new(soc),
            Arc::new(cells),
            Arc::new(temps),
            Arc::new(flags),
        ],
    )
    .expect("columns match the schema")
}

/// Writes frames to a Parquet file atomically.
pub fn write_frames_parquet(path: &Path, frames: &Frames) -> Result<()> {
    let mut w = FramesParquetWriter::create(path)?;
    w.write(frames.iter())?;
    w.finish()
}

fn column<'b>(
    batch: &'b RecordBatch,
    name: &str,
    file: &Path,
    required: bool,
) -> Result<Option<&'b ArrayRef>> {
    match batch.schema().index_of(name) {
        Ok(i) => Ok(Some(batch.column(i))),
        Err(_) if !required => Ok(None),
        Err(_) => Err(BmsError::Header {
            file: Some(file.to_path_buf()),
            expected: format!("a column named '{name}'"),
            found: format!(
                "columns {}",
                batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

fn type_err(file: &Path, name: &str, want: &str, found: &DataType) -> BmsError {
    BmsError::Header {
        file: Some(file.to_path_buf()),
        expected: format!("column '{name}' of type {want}"),
        found: format!("{found}"),
    }
}

/// A numeric column read as f64, nulls as NaN.
fn f64_values(a: &ArrayRef, name: &str, file: &Path) -> Result<Vec<f64>> {
    let get = |i: usize, v: f64| if a.is_null(i) { f64::NAN } else { v };
    Ok(match a.data_type() {
        DataType::Float64 => a
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| get(i, v))
            .collect(),
        DataType::Float32 => a
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| get(i, v as f64))
            .collect(),
        DataType::Int64 => a
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| get(i, v as f64))
            .collect(),
        DataType::Int32 => a
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| get(i, v as f64))
            .collect(),
        other => return Err(type_err(file, name, "double or float", other)),
    })
}

/// Per-row value ranges (None for a null list) and the flat values.
type ListColumn = (Vec<Option<(usize, usize)>>, Vec<f64>);

fn list_values(a: &ArrayRef, name: &str, file: &Path) -> Result<ListColumn> {
    let (offsets, values, nulls): (Vec<(usize, usize)>, ArrayRef, Option<_>) = match a.data_type() {
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let o = l
                .value_offsets()
                .windows(2)
                .map(|w| (w[0] as usize, w[1] as usize))
                .collect();
            (o, l.values().clone(), l.nulls().cloned())
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            let o = l
                .value_offsets()
                .windows(2)
                .map(|w| (w[0] as usize, w[1] as usize))
                .collect();
            (o, l.values().clone(), l.nulls().cloned())
        }
        other => return Err(type_err(file, name, "list<double>", other)),
    };
    let flat = f64_values(&values, &format!("{name}.item"), file)?;
    let ranges = offsets
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                None
            } else {
                Some(r)
            }
        })
        .collect();
    Ok((ranges, flat))
}

fn timestamps(a: &ArrayRef, file: &Path) -> Result<Vec<Option<i64>>> {
    use arrow_array::types::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    let collect = |vals: Vec<Option<i64>>| Ok(vals);
    match a.data_type() {
        DataType::Int64 => collect(a.as_primitive::<Int64Type>().iter().collect()),
        DataType::Timestamp(TimeUnit::Millisecond, _) => collect(
            a.as_primitive::<TimestampMillisecondType>()
                .iter()
                .collect(),
        ),
        DataType::Timestamp(TimeUnit::Second, _) => collect(
            a.as_primitive::<TimestampSecondType>()
                .iter()
                .map(|v| v.and_then(|s| s.checked_mul(1000)))
                .collect(),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => collect(
            a.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .map(|v| v.map(|u| u.div_euclid(1000)))
                .collect(),
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => collect(
            a.as_primitive::<TimestampNanosecondType>()
                .iter()
                .map(|v| v.map(|n| n.div_euclid(1_000_000)))
                .collect(),
        ),
        other => Err(type_err(
            file,
            "timestamp",
            "int64 milliseconds or timestamp",
            other,
        )),
    }
}

fn strings(a: &ArrayRef, name: &str, file: &Path) -> Result<Vec<Option<String>>> {
    Ok(match a.data_type() {
        DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_owned))
            .collect(),
        DataType::LargeUtf8 => a
            .as_string::<i64>()
            .iter()
            .map(|s| s.map(str::to_owned))
            .collect(),
        DataType::Utf8View => a
            .as_string_view()
            .iter()
            .map(|s| s.map(str::to_owned))
            .collect(),
        // A pandas `category` column: keys of any integer type into string values.
        DataType::Dictionary(_, v) if is_string(v) => {
            let d = a.as_any_dictionary();
            let values = strings(d.values(), name, file)?;
            if values.is_empty() {
                // No values: every key is null (the array is valid).
                vec![None; a.len()]
            } else {
                let keys = d.normalized_keys();
                (0..a.len())
                    .map(|i| {
                        if a.is_null(i) {
                            None
                        } else {
                            values[keys[i]].clone()
                        }
                    })
                    .collect()
            }
        }
        other => {
            return Err(type_err(
                file,
                name,
                "string (utf8, large_utf8, utf8_view or a dictionary of them)",
                other,
            ));
        }
    })
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// A number of a Parquet column under SPEC §4's one rule ([`check_range`], that of the text
/// readers): missing (NaN; a null reads as NaN) or finite as the `f32` a model reads. The
/// reason names the row and `what` (the column, and the item of a list), because a lenient
/// reject keeps only the reason and the row.
fn check_value(loc: impl FnOnce() -> Location, row: u64, what: &str, v: f64) -> Result<()> {
    match check_range(v) {
        Ok(_) => Ok(()),
        Err(why) => Err(BmsError::parse(
            loc(),
            format!("row {row} (1-based), {what}: {v:?} {why}"),
        )),
    }
}

/// A daily `Date` cell: the date, `Err(None)` when null, `Err(Some(reason))` when refused.
type DateCell = std::result::Result<NaiveDate, Option<String>>;

/// The dates of a daily `Date` column. A `date64` or `timestamp` must be a whole day; a
/// timestamp with a timezone must be midnight in it (UTC or a fixed offset; a named zone
/// needs a zone database, which this crate does not carry, and is refused by name).
fn daily_dates(a: &ArrayRef, file: &Path) -> Result<Vec<DateCell>> {
    use arrow_array::types::{
        Date32Type, Date64Type, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampNanosecondType, TimestampSecondType,
    };
    let want = "date32, date64, YYYY-MM-DD strings, or a timestamp that is naive, UTC or at \
                a fixed offset such as +08:00 (named timezones other than UTC are not read)";
    Ok(match a.data_type() {
        DataType::Date32 => a
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| {
                let d = d.ok_or(None)?;
                date_of_day(d as i64)
                    .ok_or_else(|| Some(format!("date32 {d} is outside the calendar")))
            })
            .collect(),
        DataType::Date64 => whole_days(a.as_primitive::<Date64Type>().iter(), 1000, "date64", None),
        DataType::Timestamp(unit, tz) => {
            let zone = match tz.as_deref() {
                None => None,
                Some(name) => match timezone_seconds(name) {
                    Some(s) => Some((name, s)),
                    None => return Err(type_err(file, "Date", want, a.data_type())),
                },
            };
            match unit {
                TimeUnit::Second => whole_days(
                    a.as_primitive::<TimestampSecondType>().iter(),
                    1,
                    "timestamp",
                    zone,
                ),
                TimeUnit::Millisecond => whole_days(
                    a.as_primitive::<TimestampMillisecondType>().iter(),
                    1000,
                    "timestamp",
                    zone,
                ),
                TimeUnit::Microsecond => whole_days(
                    a.as_primitive::<TimestampMicrosecondType>().iter(),
                    1_000_000,
                    "timestamp",
                    zone,
                ),
                TimeUnit::Nanosecond => whole_days(
                    a.as_primitive::<TimestampNanosecondType>().iter(),
                    1_000_000_000,
                    "timestamp",
                    zone,
                ),
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => string_dates(a, file)?,
        DataType::Dictionary(_, v) if is_string(v) => string_dates(a, file)?,
        other => return Err(type_err(file, "Date", want, other)),
    })
}

fn string_dates(a: &ArrayRef, file: &Path) -> Result<Vec<DateCell>> {
    Ok(strings(a, "Date", file)?
        .into_iter()
        .map(|s| parse_date(s.ok_or(None)?.as_bytes()).map_err(Some))
        .collect())
}

/// The offset from UTC, in seconds, of an Arrow timestamp's timezone: `UTC` (also `Z`,
/// `Etc/UTC`, `GMT`, `Etc/GMT`) or a fixed offset as SPEC §4 writes them (`+08:00`).
fn timezone_seconds(tz: &str) -> Option<i64> {
    if matches!(
        tz,
        "Etc/UTC" | "Etc/GMT" | "GMT" | "Etc/Universal" | "Universal"
    ) {
        return Some(0);
    }
    tz.parse::<UtcOffset>().ok().map(|o| i64::from(o.seconds()))
}

/// Date64 or timestamp values (`per_second` units a second, at `zone`'s offset if any) as
/// whole days; a value that is not exactly midnight is refused, naming it.
fn whole_days(
    values: impl Iterator<Item = Option<i64>>,
    per_second: i64,
    kind: &str,
    zone: Option<(&str, i64)>,
) -> Vec<DateCell> {
    let unit = match per_second {
        1 => "s",
        1000 => "ms",
        1_000_000 => "us",
        _ => "ns",
    };
    let per_day = 86_400 * i128::from(per_second);
    values
        .map(|v| {
            let v = v.ok_or(None)?;
            let offset = zone.map_or(0, |(_, s)| s);
            let local = i128::from(v) + i128::from(offset) * i128::from(per_second);
            let day = i64::try_from(local.div_euclid(per_day)).ok();
            let date = day
                .and_then(date_of_day)
                .ok_or_else(|| Some(format!("{kind} {v} {unit} is outside the calendar")))?;
            let rem = local.rem_euclid(per_day);
            if rem == 0 {
                return Ok(date);
            }
            // rem < per_day: the seconds fit a day and the fraction a second.
            let secs = (rem / i128::from(per_second)) as u32;
            let nanos = (rem % i128::from(per_second)) as u32 * (1_000_000_000 / per_second) as u32;
            let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
                .expect("less than a day");
            let (at, rule) = match (kind, zone) {
                ("date64", _) => (
                    String::new(),
                    "a date64 Date must be a whole number of days (a multiple of 86400000 ms)"
                        .to_owned(),
                ),
                (_, Some((name, _))) => (
                    format!(" at {name}"),
                    format!("a timestamp Date must be exactly 00:00:00 in its timezone {name}"),
                ),
                (_, None) => (
                    String::new(),
                    "a timestamp Date must be exactly 00:00:00 (the timestamp is naive)".to_owned(),
                ),
            };
            Err(Some(format!(
                "{kind} {v} {unit} ({date} {time}{at}) is not midnight: {rule}"
            )))
        })
        .collect()
}

fn flags(a: &ArrayRef, file: &Path) -> Result<Vec<Option<i64>>> {
    Ok(match a.data_type() {
        DataType::UInt32 => a
            .as_primitive::<UInt32Type>()
            .iter()
            .map(|v| v.map(i64::from))
            .collect(),
        DataType::Int64 => a.as_primitive::<Int64Type>().iter().collect(),
        DataType::Int32 => a
            .as_primitive::<Int32Type>()
            .iter()
            .map(|v| v.map(i64::from))
            .collect(),
        other => return Err(type_err(file, "alarm_flags", "uint32", other)),
    })
}

/// The record batches of a Parquet file, each decoded inside [`shielded`]; a decoding
/// error is this file's [`BmsError::Parquet`].
struct Batches<'p> {
    path: &'p Path,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
}

impl Iterator for Batches<'_> {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        match shielded(self.path, || Ok(self.reader.next())) {
            Ok(next) => next.map(|b| b.map_err(|e| pq_err(self.path, e))),
            Err(e) => Some(Err(e)),
        }
    }
}

/// Runs a call into the parquet crate, which panics on some malformed files instead of
/// returning an error (found by fuzzing: "Decoder for dict should have been set" from a
/// data page that needs a dictionary when the column chunk has none, parquet 60.1): such a
/// panic is an error naming the file, not the caller's crash.
fn shielded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(BmsError::Parquet {
            file: Some(path.to_path_buf()),
            message: format!("the file is malformed (the Parquet decoder failed: {what})"),
            source: None,
        })
    })
}

/// Refuses a Parquet footer whose Thrift metadata declares a list, set or map with more
/// elements than bytes remain: every element takes at least one byte, so no valid file
/// does, and the parquet crate (60.1) skips such counts element by element (a list of
/// booleans without reading a byte each): a 2 KB file took 6 s there (found by fuzzing,
/// `frames_parquet`). Other malformations are left to the parquet crate to report.
pub fn check_footer(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).map_err(|e| BmsError::io(path, e))?;
    let len = f.metadata().map_err(|e| BmsError::io(path, e))?.len();
    if len < 12 {
        return Ok(());
    }
    let mut tail = [0u8; 8];
    f.seek(SeekFrom::End(-8))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(|e| BmsError::io(path, e))?;
    let meta_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if &tail[4..] != b"PAR1" || meta_len + 8 > len {
        return Ok(());
    }
    let mut meta = vec![0u8; meta_len as usize];
    f.seek(SeekFrom::Start(len - 8 - meta_len))
        .and_then(|_| f.read_exact(&mut meta))
        .map_err(|e| BmsError::io(path, e))?;
    let mut t = Thrift { b: &meta, at: 0 };
    match t.skip(12, 64) {
        Err(Some(why)) => Err(BmsError::Parquet {
            file: Some(path.to_path_buf()),
            message: format!("the file is malformed (its footer metadata {why})"),
            source: None,
        }),
        _ => Ok(()),
    }
}

/// A walk over Thrift compact-protocol bytes. `Err(None)`: the bytes end or are not
/// Thrift (left to the parquet crate); `Err(Some(why))`: a count larger than the bytes.
struct Thrift<'a> {
    b: &'a [u8],
    at: usize,
}

impl Thrift<'_> {
    fn byte(&mut self) -> Result<u8, Option<String>> {
        let v = *self.b.get(self.at).ok_or(None)?;
        self.at += 1;
        Ok(v)
    }

    fn varint(&mut self) -> Result<u64, Option<String>> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(None)
    }

    fn count(&mut self, n: u64, what: &str) -> Result<u64, Option<String>> {
        let left = (self.b.len() - self.at) as u64;
        if n > left {
            return Err(Some(format!(
                "declares a {what} of {n} elements in {left} bytes"
            )));
        }
        Ok(n)
    }

    /// Skips one value of compact type `ty`.
    fn skip(&mut self, ty: u8, depth: u8) -> Result<(), Option<String>> {
        if depth == 0 {
            return Err(None);
        }
        match ty {
            1 | 2 => Ok(()),
            3 => self.byte().map(|_| ()),
            4..=6 => self.varint().map(|_| ()),
            7 => {
                self.count(8, "double")?;
                self.at += 8;
                Ok(())
            }
            8 => {
                let n = self.varint()?;
                let n = self.count(n, "binary")?;
                self.at += n as usize;
                Ok(())
            }
            9 | 10 => {
                let h = self.byte()?;
                let n = match h >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                let n = self.count(n, "list")?;
                let elem = h & 0x0f;
                for _ in 0..n {
                    // Booleans in a list are one byte each.
                    if matches!(elem, 1 | 2) {
                        self.byte()?;
                    } else {
                        self.skip(elem, depth - 1)?;
                    }
                }
                Ok(())
            }
            11 => {
                let n = self.varint()?;
                let n = self.count(n, "map")?;
                if n > 0 {
                    let kv = self.byte()?;
                    for _ in 0..n {
                        self.skip(kv >> 4, depth - 1)?;
                        self.skip(kv & 0x0f, depth - 1)?;
                    }
                }
                Ok(())
            }
            12 => loop {
                let h = self.byte()?;
                if h == 0 {
                    return Ok(());
                }
                if h >> 4 == 0 {
                    self.varint()?;
                }
                self.skip(h & 0x0f, depth - 1)?;
            },
            _ => Err(None),
        }
    }
}

fn open_batches(path: &Path) -> Result<Batches<'_>> {
    check_footer(path)?;
    let file = File::open(path).map_err(|e| BmsError::io(path, e))?;
    let reader = shielded(path, || {
        ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| pq_err(path, e))?
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| pq_err(path, e))
    })?;
    Ok(Batches { path, reader })
}

/// Reads a frame Parquet file. Rows are numbered from 1 in errors and rejects.
pub fn read_frames_parquet(path: &Path, mode: ReadMode) -> Result<ReadReport<Frames>> {
    let mut frames = Frames::new();
    let mut sink = RejectSink::new(mode);
    let mut row0 = 0u64;
    for batch in open_batches(path)? {
        let batch = batch?;
        let vin = strings(
            column(&batch, "vin", path, true)?.expect("required"),
            "vin",
            path,
        )?;
        let ts = timestamps(
            column(&batch, "timestamp", path, true)?.expect("required"),
            path,
        )?;
        let pv = f64_values(
            column(&batch, "pack_voltage", path, true)?.expect("required"),
            "pack_voltage",
            path,
        )?;
        let pi = f64_values(
            column(&batch, "pack_current", path, true)?.expect("required"),
            "pack_current",
            path,
        )?;
        let soc = f64_values(
            column(&batch, "soc", path, true)?.expect("required"),
            "soc",
            path,
        )?;
        let (cr, cv) = list_values(
            column(&batch, "cell_voltages", path, true)?.expect("required"),
            "cell_voltages",
            path,
        )?;
        let (tr, tv) = list_values(
            column(&batch, "temperatures", path, true)?.expect("required"),
            "temperatures",
            path,
        )?;
        let fl = match column(&batch, "alarm_flags", path, false)? {
            Some(a) => Some(flags(a, path)?),
            None => None,
        };
        for i in 0..batch.num_rows() {
            let row = row0 + i as u64 + 1;
            let loc = |name: &str| {
                Location::new(Some(path.to_path_buf()))
                    .line(row)
                    .column_name_only(name)
            };
            let parsed = (|| {
                let vin = match &vin[i] {
                    Some(v) if !v.trim().is_empty() => v.trim(),
                    _ => return Err(BmsError::parse(loc("vin"), "missing or empty VIN")),
                };
                let timestamp_ms =
                    ts[i].ok_or_else(|| BmsError::parse(loc("timestamp"), "missing timestamp"))?;
                let (c0, c1) = cr[i].ok_or_else(|| {
                    BmsError::parse(loc("cell_voltages"), "missing cell voltage list")
                })?;
                let (t0, t1) = tr[i].ok_or_else(|| {
                    BmsError::parse(loc("temperatures"), "missing temperature list")
                })?;
                if c0 == c1 {
                    return Err(BmsError::parse(
                        loc("cell_voltages"),
                        "empty cell voltage list",
                    ));
                }
                if t0 == t1 {
                    return Err(BmsError::parse(
                        loc("temperatures"),
                        "empty temperature list",
                    ));
                }
                let alarm_flags = match fl.as_ref().and_then(|f| f[i]) {
                    None => None,
                    Some(v) => Some(u32::try_from(v).map_err(|_| {
                        BmsError::parse(loc("alarm_flags"), format!("{v} is not a 32-bit bitfield"))
                    })?),
                };
                for (name, v) in [
                    ("pack_voltage", pv[i]),
                    ("pack_current", pi[i]),
                    ("soc", soc[i]),
                ] {
                    check_value(|| loc(name), row, name, v)?;
                }
                for (name, values) in [
                    ("cell_voltages", &cv[c0..c1]),
                    ("temperatures", &tv[t0..t1]),
                ] {
                    if let Some((j, &v)) = values
                        .iter()
                        .enumerate()
                        .find(|(_, v)| check_range(**v).is_err())
                    {
                        let what = format!("{name} item {} of {}", j + 1, values.len());
                        check_value(|| loc(name), row, &what, v)?;
                    }
                }
                Ok(FrameRef {
                    vin,
                    timestamp_ms,
                    pack_voltage: pv[i],
                    pack_current: pi[i],
                    soc: soc[i],
                    cell_voltages: &cv[c0..c1],
                    temperatures: &tv[t0..t1],
                    alarm_flags,
                })
            })();
            match parsed {
                Ok(f) => frames.push(f, row),
                Err(e) => sink.reject(e)?,
            }
        }
        row0 += batch.num_rows() as u64;
    }
    Ok(ReadReport {
        accepted: frames.len() as u64,
        data: frames,
        read: row0,
        rejects: sink.rejects,
    })
}

fn daily_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("VIN", DataType::Utf8, false),
        Field::new("Date", DataType::Date32, false),
    ];
    fields.extend(REFERENCE_COLUMNS.map(|c| Field::new(c.name(), DataType::Float64, true)));
    fields.push(Field::new("Label", DataType::Float64, true));
    fields.extend(EXTENDED_COLUMNS.map(|c| Field::new(c.name(), DataType::Float64, true)));
    Arc::new(Schema::new(fields))
}

/// Writes a daily table to Parquet atomically.
pub fn write_daily_parquet(path: &Path, table: &DailyTable) -> Result<()> {
    let mut out = AtomicParquet::create(path, daily_schema())?;
    for chunk in table.rows.chunks(BATCH_ROWS) {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.vin.as_str()),
            )),
            Arc::new(Date32Array::from_iter_values(
                chunk.iter().map(|r| day_of_date(r.date) as i32),
            )),
        ];
        let col = |c: DailyColumn| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(
                chunk.iter().map(|r| r.get(c)),
            ))
        };
        cols.extend(REFERENCE_COLUMNS.map(col));
        cols.push(Arc::new(Float64Array::from_iter_values(
            chunk.iter().map(|r| r.label),
        )));
        cols.extend(EXTENDED_COLUMNS.map(col));
        let batch = RecordBatch::try_new(daily_schema(), cols).expect("columns match the schema");
        out.write(&batch)?;
    }
    out.finish()
}

/// Reads a daily Parquet file (VIN, Date and the reference columns required; Label and
/// extended columns optional). Duplicate (VIN, Date) rows are an error naming both rows.
pub fn read_daily_parquet(path: &Path) -> Result<DailyTable> {
    let mut rows = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut row0 = 0u64;
    for batch in open_batches(path)? {
        let batch = batch?;
        let vin = strings(
            column(&batch, "VIN", path, true)?.expect("required"),
            "VIN",
            path,
        )?;
        let dates = daily_dates(column(&batch, "Date", path, true)?.expect("required"), path)?;
        let mut values: Vec<Option<Vec<f64>>> = Vec::with_capacity(N_DAILY_COLUMNS);
        for c in DailyColumn::ALL {
            let required = REFERENCE_COLUMNS.contains(&c);
            values.push(match column(&batch, c.name(), path, required)? {
                Some(a) => Some(f64_values(a, c.name(), path)?),
                None => None,
            });
        }
        let label = match column(&batch, "Label", path, false)? {
            Some(a) => Some(f64_values(a, "Label", path)?),
            None => None,
        };
        for i in 0..batch.num_rows() {
            let row = row0 + i as u64 + 1;
            let loc = |name: &str| {
                Location::new(Some(path.to_path_buf()))
                    .line(row)
                    .column_name_only(name)
            };
            let v = match &vin[i] {
                Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
                _ => return Err(BmsError::parse(loc("VIN"), "missing or empty VIN")),
            };
            let date = match &dates[i] {
                Ok(d) => *d,
                Err(None) => return Err(BmsError::parse(loc("Date"), "missing date")),
                Err(Some(reason)) => {
                    return Err(BmsError::parse(
                        loc("Date"),
                        format!("row {row} (1-based), Date: {reason}"),
                    ));
                }
            };
            let mut vals = [f64::NAN; N_DAILY_COLUMNS];
            for (k, col) in values.iter().enumerate() {
                if let Some(col) = col {
                    let name = DailyColumn::ALL[k].name();
                    check_value(|| loc(name), row, name, col[i])?;
                    vals[k] = col[i];
                }
            }
            let l = label.as_ref().map_or(f64::NAN, |l| l[i]);
            if !(l.is_nan() || l == 0.0 || l == 1.0) {
                return Err(BmsError::parse(
                    loc("Label"),
                    format!("label {l} is not 0, 1 or nan"),
                ));
            }
            if let Some(first) = seen.insert((v.clone(), date), row) {
                return Err(BmsError::DuplicateDay {
                    file: Some(path.to_path_buf()),
                    vin: v,
                    date: date.to_string(),
                    first_line: first,
                    second_line: row,
                });
            }
            rows.push(DailyRow {
                vin: v,
                date,
                values: vals,
                label: l,
            });
        }
        row0 += batch.num_rows() as u64;
    }
    Ok(DailyTable { rows })
}
