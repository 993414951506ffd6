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
mod field;
pub mod frame_csv;
pub mod parquet;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{BmsError, Location, Result};

pub use batch_csv::{BatchData, read_batch_csv, write_batch_csv};
pub use daily_csv::{read_daily_csv, write_daily_csv};
pub use field::{parse_date, parse_f32, parse_f64};
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

    /// The temporary file's path (for writers that open it themselves).
    pub fn path(&self) -> &Path {
        self.tmp.as_ref().expect("live").path()
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

/// Reads CSV one physical line at a time, so that line numbers are exact (CRLF or LF,
/// blank lines counted but skipped). A field may be quoted (`"a,b"`, `""` for a quote)
/// but may not span lines: none of the project's formats needs that.
pub(crate) struct LineReader<R> {
    r: R,
    buf: Vec<u8>,
    /// The unquoted fields of a line with quotes; `bounds` then index this, else `buf`.
    data: Vec<u8>,
    quoted: bool,
    bounds: Vec<(usize, usize)>,
    line: u64,
    file: Option<PathBuf>,
}

/// The fields of one line.
pub(crate) struct Record<'a> {
    data: &'a [u8],
    bounds: &'a [(usize, usize)],
    /// 1-based physical line number.
    pub line: u64,
}

impl<'a> Record<'a> {
    pub fn len(&self) -> usize {
        self.bounds.len()
    }
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (a, b) = self.bounds[i];
        &self.data[a..b]
    }
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }
}

impl<R: std::io::BufRead> LineReader<R> {
    pub fn new(r: R, file: Option<&Path>) -> Self {
        LineReader {
            r,
            buf: Vec::with_capacity(4096),
            data: Vec::with_capacity(4096),
            quoted: false,
            bounds: Vec::new(),
            line: 0,
            file: file.map(Path::to_path_buf),
        }
    }

    /// The next non-blank line, `None` at the end. A read failure is an error; a line that
    /// cannot be split (unterminated quote) is an inner error naming the line.
    #[allow(clippy::type_complexity)]
    pub fn next_record(&mut self) -> Result<Option<Result<Record<'_>>>> {
        loop {
            self.buf.clear();
            let n = self.r.read_until(b'\n', &mut self.buf).map_err(|e| {
                BmsError::parse(
                    Location::new(self.file.clone()).line(self.line + 1),
                    format!("read failed: {e}"),
                )
            })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let mut end = self.buf.len();
            while end > 0 && (self.buf[end - 1] == b'\n' || self.buf[end - 1] == b'\r') {
                end -= 1;
            }
            if self.buf[..end].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err(e) = self.split(end) {
                return Ok(Some(Err(e)));
            }
            return Ok(Some(Ok(Record {
                data: if self.quoted { &self.data } else { &self.buf },
                bounds: &self.bounds,
                line: self.line,
            })));
        }
    }

    fn split(&mut self, end: usize) -> Result<()> {
        self.data.clear();
        self.bounds.clear();
        let line = &self.buf[..end];
        self.quoted = memchr::memchr(b'"', line).is_some();
        if !self.quoted {
            // Fields are ranges of the line itself.
            let mut start = 0;
            for i in memchr::memchr_iter(b',', line) {
                self.bounds.push((start, i));
                start = i + 1;
            }
            self.bounds.push((start, line.len()));
            return Ok(());
        }
        let mut i = 0;
        loop {
            let start = self.data.len();
            if line.get(i) == Some(&b'"') {
                i += 1;
                loop {
                    match line.get(i) {
                        None => {
                            return Err(BmsError::parse(
                                Location::new(self.file.clone())
                                    .line(self.line)
                                    .column(self.bounds.len() + 1, None),
                                "unterminated quoted field",
                            ));
                        }
                        Some(b'"') if line.get(i + 1) == Some(&b'"') => {
                            self.data.push(b'"');
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(&b) => {
                            self.data.push(b);
                            i += 1;
                        }
                    }
                }
                while i < line.len() && line[i] != b',' {
                    self.data.push(line[i]);
                    i += 1;
                }
            } else {
                while i < line.len() && line[i] != b',' {
                    self.data.push(line[i]);
                    i += 1;
                }
            }
            self.bounds.push((start, self.data.len()));
            if i >= line.len() {
                return Ok(());
            }
            i += 1;
        }
    }
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
