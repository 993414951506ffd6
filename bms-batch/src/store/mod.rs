//! Durable, idempotent stores for predictions (SPEC §8, AWS.md §1).
//!
//! One record type, [`Prediction`], and the three stores that `bms predict --out DIR`
//! writes (through the sinks of [`crate::sink`]) and that `bms serve --store DIR` reuses:
//!
//! | sink | file | what |
//! |---|---|---|
//! | [`SqliteStore`] | `results.sqlite` | table `predictions` keyed by the deterministic event id, upserted (the stand-in for the reference's key-value table) |
//! | [`EventLog`] / [`write_event_json`] | `events.jsonl` | the reference's stored-event JSON, one object per line |
//! | [`parquet::PredictionsParquet`] | `predictions.parquet` | every field plus the features, one column each |
//!
//! The event id ([`event_id`]) is derived from (vin, date, model_id), so scoring the same
//! window twice with the same model overwrites the same row instead of adding one, and a
//! different model adds rows.
//!
//! ```no_run
//! use bms_batch::store::{Prediction, Store, event_field_names};
//! # fn main() -> anyhow::Result<()> {
//! let spec = bms_core::WindowSpec::default();
//! let mut store = Store::open("out/store".as_ref(), event_field_names(&spec))?;
//! let date = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
//! let p = Prediction::new("LSVAX00000000001", date, 0.7, 0.5, "my-model", vec![0.0; 84]);
//! store.write_batch(&[p])?; // one SQLite transaction + appended, fsynced JSONL lines
//! # Ok(()) }
//! ```

pub mod bulk;
pub mod parquet;
pub mod sqlite;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bms_core::{DailyColumn, WindowSpec};
use chrono::NaiveDate;
use sha2::{Digest, Sha256};

pub use sqlite::SqliteStore;

/// File names inside a store directory.
pub const SQLITE_FILE: &str = "results.sqlite";
pub const EVENTS_FILE: &str = "events.jsonl";
pub const PARQUET_FILE: &str = "predictions.parquet";
/// The directory `--partition-by date` writes instead of [`PARQUET_FILE`].
pub const PARQUET_DIR: &str = "predictions";
pub const REJECTS_FILE: &str = "rejects.csv";
pub const SUMMARY_FILE: &str = "summary.json";

/// The key of the event id in the stored-event JSON (the reference's Glue table column).
pub const EVENT_ID_FIELD: &str = "request_id";

/// One scored window.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Deterministic id from (vin, date, model_id): see [`event_id`].
    pub event_id: String,
    pub vin: String,
    /// The window's date: the first day of the predicted horizon.
    pub date: NaiveDate,
    pub predicted_prob: f32,
    /// `predicted_prob >= threshold`.
    pub alarm: bool,
    pub model_id: String,
    /// The window's features as given to the model, day-major, oldest day first
    /// (`context × features` values). May be empty when the caller does not keep them.
    pub features: Vec<f32>,
}

impl Prediction {
    /// A prediction with its event id computed and `alarm = prob >= threshold`.
    pub fn new(
        vin: &str,
        date: NaiveDate,
        predicted_prob: f32,
        threshold: f32,
        model_id: &str,
        features: Vec<f32>,
    ) -> Self {
        Prediction {
            event_id: event_id(vin, date, model_id),
            vin: vin.to_owned(),
            date,
            predicted_prob,
            alarm: predicted_prob >= threshold,
            model_id: model_id.to_owned(),
            features,
        }
    }
}

/// The deterministic event id of a prediction: the first 16 bytes of
/// SHA-256(`vin` 0x1F `YYYY-MM-DD` 0x1F `model_id`) written as a UUID (version 8,
/// RFC 9562 "custom"), e.g. `3f2a…-…`. The reference uses random UUIDs in the same
/// place, so existing consumers that expect a UUID string keep working.
pub fn event_id(vin: &str, date: NaiveDate, model_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(vin.as_bytes());
    h.update([0x1f]);
    h.update(iso_date(date).as_bytes());
    h.update([0x1f]);
    h.update(model_id.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(HEX[usize::from(x >> 4)]));
        id.push(char::from(HEX[usize::from(x & 15)]));
    }
    id
}

/// `YYYY-MM-DD` (what `date.format("%Y-%m-%d")` gives, without parsing a format string
/// for every row).
pub fn iso_date(date: NaiveDate) -> String {
    let mut s = String::with_capacity(10);
    push_iso_date(&mut s, date);
    s
}

/// Appends `YYYY-MM-DD` (what `{:04}-{:02}-{:02}` of year, month and day writes) without
/// the formatting machinery for the years 0–9999: three dates per prediction.
pub fn push_iso_date(out: &mut String, date: NaiveDate) {
    use chrono::Datelike;
    let (y, m, d) = (date.year(), date.month(), date.day());
    match u32::try_from(y) {
        Ok(y) if y <= 9999 => {
            let digit = |v: u32| char::from(b'0' + (v % 10) as u8);
            for c in [
                digit(y / 1000),
                digit(y / 100),
                digit(y / 10),
                digit(y),
                '-',
                digit(m / 10),
                digit(m),
                '-',
                digit(d / 10),
                digit(d),
            ] {
                out.push(c);
            }
        }
        _ => {
            use std::fmt::Write as _;
            write!(out, "{y:04}-{m:02}-{d:02}").expect("writing to a String");
        }
    }
}

/// The snake_case name of a daily column in events (`TotalVoltage` → `total_voltage`).
pub fn event_column_name(c: DailyColumn) -> &'static str {
    match c {
        DailyColumn::TotalVoltage => "total_voltage",
        DailyColumn::TotalCurrent => "total_current",
        DailyColumn::CellMaxVoltage => "cell_max_voltage",
        DailyColumn::CellMinVoltage => "cell_min_voltage",
        DailyColumn::MaxTemperature => "max_temperature",
        DailyColumn::MinTemperature => "min_temperature",
        other => other.name(),
    }
}

/// The event field name of every feature of a window, in feature order: feature
/// `day * F + k` is `<column k>_<C − day>`, so suffix `C` (14 for the reference) is the
/// oldest day and `1` the newest (AWS.md §1).
pub fn event_field_names(spec: &WindowSpec) -> Vec<String> {
    let mut names = Vec::with_capacity(spec.width());
    for day in 0..spec.context {
        for &c in &spec.features {
            names.push(format!("{}_{}", event_column_name(c), spec.context - day));
        }
    }
    names
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Shortest representation that reads back to the same f32 (ryu), `null` when not finite.
fn push_json_f32(out: &mut String, v: f32) {
    if v.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else {
        out.push_str("null");
    }
}

/// The feature keys of the stored-event JSON, quoted and escaped once per run
/// (`,"total_voltage_14":` …) instead of once per event, and the writer of the features
/// part of an event.
#[derive(Debug, Clone)]
pub struct EventKeys {
    keys: Vec<String>,
    /// Each key zero-padded to [`KEY_PAD`] bytes (empty for longer keys), so that the
    /// feature loop copies a fixed-size block instead of calling `memcpy` per key.
    padded: Vec<[u8; KEY_PAD]>,
    /// Bytes [`EventKeys::push_features`] may touch past the end of the string: every
    /// key (at least [`KEY_PAD`] bytes) and the longest value.
    room: usize,
}

/// Keys up to this long (`,"cell_max_voltage_14":` is 23) are copied as one block.
const KEY_PAD: usize = 32;
/// The longest text ryu writes for an `f32` (`-1.17549435e-38` is 15 bytes).
const F32_TEXT_MAX: usize = 16;

impl EventKeys {
    /// Keys for `names`, usually [`event_field_names`] of the model's spec.
    pub fn new(names: &[String]) -> Self {
        let keys: Vec<String> = names
            .iter()
            .map(|n| {
                let mut k = String::from(",");
                push_json_str(&mut k, n);
                k.push(':');
                k
            })
            .collect();
        let padded = keys
            .iter()
            .map(|k| {
                let mut block = [0u8; KEY_PAD];
                if k.len() <= KEY_PAD {
                    block[..k.len()].copy_from_slice(k.as_bytes());
                }
                block
            })
            .collect();
        let room = keys
            .iter()
            .map(|k| k.len().max(KEY_PAD) + F32_TEXT_MAX)
            .sum();
        EventKeys { keys, padded, room }
    }

    /// Appends `,"<key>":<value>` for each feature that has a key: the value's shortest
    /// text that reads back to the same f32 (ryu), `null` when not finite. The same text
    /// as `push_str(key)` + [`push_json_f32`] per feature, written in place: this loop runs
    /// 84 times per prediction and the per-call copies were ~10 % of `bms predict`.
    fn push_features(&self, out: &mut String, features: &[f32]) {
        out.reserve(self.room);
        // SAFETY: `reserve` made room for `self.room` bytes past `len`, and each feature
        // advances `len` by at most what `room` counts for it (a key copied as
        // max(len, KEY_PAD) bytes but advancing by its length, then at most
        // F32_TEXT_MAX bytes of value), so every write stays within the capacity. The
        // bytes kept (up to the final `len`) are the keys' UTF-8 and ryu's or `null`'s
        // ASCII; bytes written past them are beyond `set_len` and never read as text.
        unsafe {
            let v = out.as_mut_vec();
            let base = v.as_mut_ptr();
            let mut len = v.len();
            for ((key, block), &x) in self.keys.iter().zip(&self.padded).zip(features) {
                if key.len() <= KEY_PAD {
                    std::ptr::copy_nonoverlapping(block.as_ptr(), base.add(len), KEY_PAD);
                } else {
                    std::ptr::copy_nonoverlapping(key.as_ptr(), base.add(len), key.len());
                }
                len += key.len();
                if x.is_finite() {
                    len += ryu::raw::format32(x, base.add(len));
                } else {
                    std::ptr::copy_nonoverlapping(b"null".as_ptr(), base.add(len), 4);
                    len += 4;
                }
            }
            v.set_len(len);
        }
    }
}

/// Appends the stored-event JSON of `p` (compact separators, no newline) to `out`:
/// `{"request_id":…,"vin":…,"date":"YYYY-MM-DD","predicted_prob":p,<feature names>…}`.
/// `keys` come from [`event_field_names`] of the model's spec; features beyond them are
/// not written, and a non-finite value is written as `null`.
pub fn write_event_json(out: &mut String, p: &Prediction, keys: &EventKeys) {
    out.push('{');
    push_json_str(out, EVENT_ID_FIELD);
    out.push(':');
    push_json_str(out, &p.event_id);
    out.push_str(",\"vin\":");
    push_json_str(out, &p.vin);
    out.push_str(",\"date\":\"");
    push_iso_date(out, p.date);
    out.push_str("\",\"predicted_prob\":");
    push_json_f32(out, p.predicted_prob);
    keys.push_features(out, &p.features);
    out.push('}');
}

/// An append-only `events.jsonl` for long-running writers (`bms serve --store`): each
/// [`EventLog::append`] writes whole lines and fsyncs; a failed append (a full disk) is cut
/// back to where it started, and opening drops a half line a crash left at the end, so a
/// half line never stands before a later one.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
    keys: EventKeys,
    buf: String,
}

impl EventLog {
    pub fn open(path: &Path, names: Vec<String>) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let whole =
            whole_lines_len(&file).with_context(|| format!("reading {}", path.display()))?;
        if whole < file.metadata().map(|m| m.len()).unwrap_or(0) {
            // The batch a crash interrupted; it was never acknowledged.
            file.set_len(whole)
                .with_context(|| format!("cutting a half line off {}", path.display()))?;
        }
        Ok(EventLog {
            path: path.to_path_buf(),
            file,
            keys: EventKeys::new(&names),
            buf: String::new(),
        })
    }

    /// Appends one line per prediction and syncs the file.
    pub fn append(&mut self, preds: &[Prediction]) -> Result<()> {
        self.append_at(preds).map(|_| ())
    }

    /// Cuts the log back to `len` bytes (its length before an append) and syncs.
    pub fn cut(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cutting {} back", self.path.display()))
    }

    /// [`EventLog::append`], returning the length the log had before.
    fn append_at(&mut self, preds: &[Prediction]) -> Result<u64> {
        self.buf.clear();
        for p in preds {
            write_event_json(&mut self.buf, p, &self.keys);
            self.buf.push('\n');
        }
        let start = self
            .file
            .metadata()
            .with_context(|| format!("reading {}", self.path.display()))?
            .len();
        let written = self
            .file
            .write_all(self.buf.as_bytes())
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut a partial write back (appends go to the end, wherever the length is).
            let _ = self.file.set_len(start);
            return Err(e).with_context(|| format!("writing {}", self.path.display()));
        }
        Ok(start)
    }
}

/// The length of `file` up to and including its last newline.
fn whole_lines_len(file: &File) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut f = file;
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The incremental store of a directory: `results.sqlite` (upsert) and `events.jsonl`
/// (append). One-shot batch runs that must replace files atomically use
/// [`crate::StoreDir`] instead.
#[derive(Debug)]
pub struct Store {
    pub sqlite: SqliteStore,
    pub events: EventLog,
}

impl Store {
    /// Creates `dir` when missing and opens (or creates) both files in it.
    pub fn open(dir: &Path, names: Vec<String>) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
        let sqlite = SqliteStore::open(&dir.join(SQLITE_FILE))?;
        sqlite.use_wal()?;
        Ok(Store {
            sqlite,
            events: EventLog::open(&dir.join(EVENTS_FILE), names)?,
        })
    }

    /// Upserts `preds` in one SQLite transaction and appends their events, both durable
    /// when it returns `Ok`. The two files are written and synced at the same time (a
    /// commit costs one fsync's time, not two); when the upsert fails, the appended events
    /// are cut off again, so a retry of the batch does not log it twice.
    pub fn write_batch(&mut self, preds: &[Prediction]) -> Result<()> {
        let Store { sqlite, events } = self;
        let (upserted, appended) = std::thread::scope(|scope| {
            let log = scope.spawn(|| events.append_at(preds));
            let upserted = sqlite.upsert(preds);
            let appended = log
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the event log writer panicked")));
            (upserted, appended)
        });
        match (upserted, appended) {
            (Ok(()), Ok(_)) => Ok(()),
            (Err(e), Ok(start)) => {
                events.cut(start)?;
                Err(e)
            }
            (_, Err(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn opening_an_event_log_drops_a_half_line_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENTS_FILE);
        for (before, after) in [
            ("{\"a\":1}\n{\"a\":2}\n{\"a\"", "{\"a\":1}\n{\"a\":2}\n"),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            ("{\"a\"", ""),
            ("", ""),
        ] {
            std::fs::write(&path, before).unwrap();
            let mut log = EventLog::open(&path, vec!["f1".into()]).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{before:?}");
            let start = log.append_at(&[]).unwrap();
            assert_eq!(start, after.len() as u64);
            log.cut(0).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        }
        // A half line longer than the read-back block.
        let long = format!("{{\"a\":1}}\n{}", "x".repeat(10_000));
        std::fs::write(&path, &long).unwrap();
        EventLog::open(&path, vec![]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
    }

    #[test]
    fn event_id_depends_on_each_key_part_only() {
        let a = event_id("V1", d("2024-01-02"), "m");
        assert_eq!(a, event_id("V1", d("2024-01-02"), "m"));
        assert_ne!(a, event_id("V2", d("2024-01-02"), "m"));
        assert_ne!(a, event_id("V1", d("2024-01-03"), "m"));
        assert_ne!(a, event_id("V1", d("2024-01-02"), "n"));
        // The separator keeps ("V1", "m2") and ("V1m", "2") apart.
        assert_ne!(
            event_id("ab", d("2024-01-02"), "c"),
            event_id("a", d("2024-01-02"), "bc")
        );
        assert_eq!(a.len(), 36);
        for d in ["2024-01-02", "0999-12-31", "2024-02-29"] {
            assert_eq!(
                iso_date(NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap()),
                d
            );
        }
        assert_eq!(&a[14..15], "8", "version nibble");
        // SPEC §8 pinned: SHA-256("V1" 0x1F "2024-01-02" 0x1F "m"), first 16 bytes, version
        // and variant bits set, 8-4-4-4-12 (computed independently with Python's hashlib).
        assert_eq!(a, "23b8fca6-3efb-8cd2-a8e9-5f9702387797");
    }

    #[test]
    fn event_names_oldest_day_has_the_largest_suffix() {
        let names = event_field_names(&WindowSpec::default());
        assert_eq!(names.len(), 84);
        assert_eq!(names[0], "total_voltage_14");
        assert_eq!(names[5], "min_temperature_14");
        assert_eq!(names[6], "total_voltage_13");
        assert_eq!(names[83], "min_temperature_1");
    }

    #[test]
    fn iso_dates_as_format_writes_them() {
        use chrono::Datelike;
        for (y, m, d) in [
            (2024, 2, 29),
            (0, 1, 1),
            (9, 12, 31),
            (999, 10, 5),
            (9999, 12, 31),
            (10_000, 1, 1),
            (-1, 6, 15),
            (-2024, 3, 1),
        ] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let want = format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day());
            assert_eq!(iso_date(date), want);
        }
        let mut date = NaiveDate::from_ymd_opt(1999, 1, 1).unwrap();
        for _ in 0..20_000 {
            let want = format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day());
            assert_eq!(iso_date(date), want);
            date = date.succ_opt().unwrap();
        }
    }

    #[test]
    fn event_features_written_in_place_match_push_str_and_ryu() {
        // Keys shorter and longer than the copied block, values of every length ryu
        // writes, non-finite values, fewer features than keys and more.
        let long = "k".repeat(40);
        let names: Vec<String> = vec!["a".into(), long.clone(), "é_1".into(), "x\"y".into()];
        let keys = EventKeys::new(&names);
        let values = [
            0.0,
            -0.0,
            1.5,
            -1.175_494_4e-38,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            -3.402_823_5e38,
            123_456_790.0,
            f32::NAN,
            f32::INFINITY,
            0.1,
        ];
        for start in 0..values.len() {
            for end in start..=values.len() {
                let features = &values[start..end];
                let mut got = String::from("prefix");
                keys.push_features(&mut got, features);
                let mut want = String::from("prefix");
                for (key, &v) in keys.keys.iter().zip(features) {
                    want.push_str(key);
                    push_json_f32(&mut want, v);
                }
                assert_eq!(got, want);
            }
        }
        let mut s = String::new();
        keys.push_features(&mut s, &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(
            s,
            format!(",\"a\":1.0,\"{long}\":2.0,\"é_1\":3.0,\"x\\\"y\":4.0")
        );
    }

    #[test]
    fn event_json_escapes_and_nulls() {
        let p = Prediction::new("V\"1", d("2024-01-02"), 0.25, 0.5, "m", vec![1.5, f32::NAN]);
        let mut s = String::new();
        write_event_json(&mut s, &p, &EventKeys::new(&["a_2".into(), "a\"1".into()]));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["vin"], "V\"1");
        assert_eq!(v["a_2"], 1.5);
        assert!(v["a\"1"].is_null(), "keys are escaped too: {s}");
        assert_eq!(v["predicted_prob"], 0.25);
        assert!(!p.alarm);
    }
}
