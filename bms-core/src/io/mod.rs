//! Readers and writers for the project's file formats.
//!
//! | format | reader | writer |
//! |---|---|---|
//! | daily CSV (SPEC §4) | [`daily_csv::read_daily_csv`] | [`daily_csv::write_daily_csv`] |
//! | batch scoring CSV (SPEC §6) | [`batch_csv::read_batch_csv`] | [`batch_csv::write_batch_csv`] |
//! | frame CSV (SPEC §2) | [`frame_csv::read_frame_csv`] | [`frame_csv::write_frame_csv`] |
//! | frame Parquet (SPEC §2) | [`parquet::read_frames_parquet`] | [`parquet::write_frames_parquet`] |
//! | daily Parquet | [`parquet::read_daily_parquet`] | [`parquet::write_daily_parquet`] |
//!
//! Every reader returns a [`ReadReport`] with counts. In [`ReadMode::Strict`] the first bad
//! record is an error naming file, line and column; in [`ReadMode::Lenient`] bad records are
//! collected as [`Reject`]s and reading goes on. Either way
//! `read == accepted + rejects.len()`.

pub mod batch_csv;
pub mod daily_csv;
pub mod frame_csv;
pub mod parquet;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{BmsError, Location, Result};

pub use batch_csv::{BatchData, read_batch_csv, write_batch_csv};
pub use daily_csv::{read_daily_csv, write_daily_csv};
pub use frame_csv::{read_frame_csv, write_frame_csv};
pub use parquet::{
    read_daily_parquet, read_frames_parquet, write_daily_parquet, write_frames_parquet,
};

/// What a reader does with a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Stop at the first bad record with an error.
    #[default]
    Strict,
    /// Collect bad records as rejects and go on.
    Lenient,
}

/// A record a lenient reader set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// 1-based source line (text) or row (Parquet).
    pub line: u64,
    pub reason: String,
}

/// What a reader produced, with its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadReport<T> {
    pub data: T,
    /// Records seen (header and blank lines excluded).
    pub read: u64,
    pub accepted: u64,
    pub rejects: Vec<Reject>,
}

/// Collects rejects or fails, depending on the mode.
pub(crate) struct RejectSink {
    mode: ReadMode,
    pub rejects: Vec<Reject>,
}

impl RejectSink {
    pub fn new(mode: ReadMode) -> Self {
        RejectSink {
            mode,
            rejects: Vec::new(),
        }
    }

    /// In strict mode returns the error; in lenient mode records it.
    pub fn reject(&mut self, err: BmsError) -> Result<()> {
        match self.mode {
            ReadMode::Strict => Err(err),
            ReadMode::Lenient => {
                let line = match &err {
                    BmsError::Parse { location, .. } => location.line.unwrap_or(0),
                    BmsError::DuplicateDay { second_line, .. }
                    | BmsError::DuplicateFrame { second_line, .. } => *second_line,
                    _ => 0,
                };
                let reason = match err {
                    BmsError::Parse { location, reason } => match location.column {
                        Some(_) => format!(
                            "{}: {reason}",
                            Location {
                                file: None,
                                line: None,
                                ..location
                            }
                        ),
                        None => reason,
                    },
                    other => other.to_string(),
                };
                self.rejects.push(Reject { line, reason });
                Ok(())
            }
        }
    }
}

pub(crate) fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 16, f))
        .map_err(|e| BmsError::io(path, e))
}

/// A file written under a temporary name in the target's directory and renamed over the
/// target on [`AtomicFile::commit`]; dropped without commit, it is removed and the target is
/// untouched.
pub struct AtomicFile {
    target: PathBuf,
    tmp: Option<tempfile::NamedTempFile>,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".bms-tmp-")
            .tempfile_in(dir)
            .map_err(|e| BmsError::io(target, e))?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            tmp: Some(tmp),
        })
    }

    pub fn writer(&mut self) -> BufWriter<&mut File> {
        BufWriter::with_capacity(1 << 16, self.tmp.as_mut().expect("live").as_file_mut())
    }

    pub fn file(&mut self) -> &mut File {
        self.tmp.as_mut().expect("live").as_file_mut()
    }

    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.take().expect("live");
        tmp.as_file()
            .sync_all()
            .map_err(|e| BmsError::io(&self.target, e))?;
        tmp.persist(&self.target)
            .map_err(|e| BmsError::io(&self.target, e.error))?;
        Ok(())
    }
}

/// Writes through `f` into `path` atomically.
pub(crate) fn write_atomic(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<&mut File>) -> std::io::Result<()>,
) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    {
        let mut w = file.writer();
        f(&mut w).map_err(|e| BmsError::io(path, e))?;
        w.flush().map_err(|e| BmsError::io(path, e))?;
    }
    file.commit()
}

/// Parses a numeric field: decimal or scientific notation, `nan`/`NaN`/`NAN` or an empty
/// field as NaN. Infinities are refused (no sensor reports them).
pub(crate) fn parse_f64(field: &[u8]) -> std::result::Result<f64, String> {
    let s = std::str::from_utf8(field).map_err(|_| "not valid UTF-8".to_owned())?;
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("nan") {
        return Ok(f64::NAN);
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("'{t}' is not a finite number")),
        Err(_) => Err(format!("'{t}' is not a number")),
    }
}

/// Formats a float so that it reads back to the same value; NaN as `nan`.
pub(crate) fn fmt_f64(out: &mut String, v: f64) {
    use std::fmt::Write as _;
    if v.is_nan() {
        out.push_str("nan");
    } else {
        write!(out, "{v:?}").expect("writing to a String");
    }
}

pub(crate) fn fmt_f32(out: &mut String, v: f32) {
    use std::fmt::Write as _;
    if v.is_nan() {
        out.push_str("nan");
    } else {
        write!(out, "{v:?}").expect("writing to a String");
    }
}

pub(crate) fn csv_reader<R: std::io::Read>(r: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(r)
}

/// Converts a csv-crate error into ours, keeping the position.
pub(crate) fn csv_error(file: Option<&Path>, e: csv::Error) -> BmsError {
    let line = e.position().map(|p| p.line());
    let reason = match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 in field {}", err.field() + 1),
        csv::ErrorKind::Io(io) => format!("read failed: {io}"),
        _ => e.to_string(),
    };
    BmsError::Parse {
        location: Location {
            file: file.map(Path::to_path_buf),
            line,
            ..Default::default()
        },
        reason,
    }
}

pub(crate) fn is_blank(rec: &csv::ByteRecord) -> bool {
    rec.is_empty() || (rec.len() == 1 && rec[0].iter().all(u8::is_ascii_whitespace))
}

/// Appends a text field, quoted when it holds a separator, quote or line break.
pub(crate) fn push_text(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}
