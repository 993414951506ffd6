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
#[cfg(feature = "parquet")]
pub mod parquet;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{BmsError, Location, Result};

pub use batch_csv::{BatchData, read_batch_csv, write_batch_csv};
pub use daily_csv::{read_daily_csv, write_daily_csv};
pub use field::{check_range, parse_date, parse_f32, parse_f64};
pub use frame_csv::{read_frame_csv, write_frame_csv};
#[cfg(feature = "parquet")]
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

/// Refuses an output file path whose target exists and is not a regular file (SPEC §4):
/// outputs are written to a temporary file renamed over the path, which would replace a
/// device, FIFO or socket with a regular file and a symlink with a file (not write through
/// it). The error names the path and what it is. A missing path, or one whose directory
/// does not exist yet, passes; the path's directory may itself be (or lie behind) a symlink.
/// `-` is not special here: callers that read it as standard output do not get this far.
pub fn check_output_file(path: &Path) -> Result<()> {
    check_output(path, false)
}

/// [`check_output_file`] for an output that is a directory replaced as a whole
/// (`predictions/`): it must be missing or a directory, not a symlink to one.
pub fn check_output_dir(path: &Path) -> Result<()> {
    check_output(path, true)
}

fn check_output(path: &Path, dir: bool) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(BmsError::io(path, e)),
    };
    let ft = meta.file_type();
    let refused = |kind, reason: String| Err(BmsError::io(path, std::io::Error::new(kind, reason)));
    if ft.is_symlink() {
        let to = std::fs::read_link(path)
            .map(|t| format!(" to {}", t.display()))
            .unwrap_or_default();
        return refused(
            std::io::ErrorKind::InvalidInput,
            format!(
                "is a symlink{to}; give the path it points to (an output is never written through a link, nor replaces one)"
            ),
        );
    }
    if dir {
        if ft.is_dir() {
            return Ok(());
        }
        let what = file_type_name(&ft);
        return refused(
            std::io::ErrorKind::NotADirectory,
            format!("is {what}, not a directory; refused: it must be a directory or a new path"),
        );
    }
    if ft.is_file() {
        return Ok(());
    }
    if ft.is_dir() {
        return refused(
            std::io::ErrorKind::IsADirectory,
            "is a directory; give a file path".to_owned(),
        );
    }
    let what = file_type_name(&ft);
    refused(
        std::io::ErrorKind::InvalidInput,
        format!(
            "is {what}, not a regular file; refused: an output must be a regular file or a new path"
        ),
    )
}

/// "a regular file", "a character device", … for messages.
fn file_type_name(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

/// A file written under a temporary name in the target's directory and renamed over the
/// target on [`AtomicFile::commit`]; dropped without commit, it is removed and the target is
/// untouched. A target that exists and is not a regular file is refused
/// ([`check_output_file`]) when created and again before the rename. The temporary is
/// created with `O_CREAT | O_EXCL` (`tempfile`'s `create_new`), so a symlink planted at its
/// name cannot redirect the write.
pub struct AtomicFile {
    target: PathBuf,
    tmp: Option<tempfile::NamedTempFile>,
}

/// The name prefix of this process's temporary files and directories next to its
/// outputs: `.bms-tmp-PID-`, so that a later run can tell those of a dead process from
/// those of one still writing (see [`temp_owner`]).
pub fn temp_prefix() -> String {
    format!(".bms-tmp-{}-", std::process::id())
}

/// The process id in the name of a temporary ([`temp_prefix`]) or of a `.bms-old-PID`
/// directory; `None` for other names (and for those of versions before the id was in
/// them).
pub fn temp_owner(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix(".bms-tmp-")
        .or_else(|| name.strip_prefix(".bms-old-"))?;
    let digits = rest.split('-').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        check_output_file(target)?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix())
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
        // Replaced while it was written: refused still (the temporary is removed).
        check_output_file(&self.target)?;
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

/// Formats an `f32` so that [`parse_f32`] reads it back to the same value; NaN as `nan`.
/// An infinity is written as `inf`, which the readers refuse (SPEC §4): no reader yields
/// one, since a finite number beyond `f32`'s range is refused like an infinity.
pub(crate) fn fmt_f32(out: &mut String, v: f32) {
    use std::fmt::Write as _;
    if v.is_nan() {
        out.push_str("nan");
    } else {
        write!(out, "{v:?}").expect("writing to a String");
    }
}

/// The UTF-8 encoding of U+FEFF, the byte-order mark.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads CSV one physical line at a time, so that line numbers are exact (CRLF or LF,
/// blank lines counted but skipped). A field may be quoted (`"a,b"`, `""` for a quote)
/// but may not span lines: none of the project's formats needs that.
pub(crate) struct LineReader<R> {
    r: R,
    /// A line that did not fit the reader's buffer, copied.
    buf: Vec<u8>,
    /// The unquoted fields of a line with quotes; `bounds` then index this.
    data: Vec<u8>,
    quoted: bool,
    bounds: Vec<(usize, usize)>,
    /// Bytes of the reader's buffer holding the last record, consumed on the next call.
    pending: usize,
    /// Length of the last record's line without its line break.
    end: usize,
    /// Where the last record's fields start in its line: 3 after a UTF-8 byte-order mark
    /// opening the input, else 0.
    start: usize,
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
            pending: 0,
            end: 0,
            start: 0,
            line: 0,
            file: file.map(Path::to_path_buf),
        }
    }

    /// A failed read is an I/O error of its kind (a directory, a device error), naming the
    /// line it stopped at.
    fn read_error(file: &Option<PathBuf>, e: std::io::Error, line: u64) -> BmsError {
        BmsError::Io {
            path: file.clone().unwrap_or_else(|| PathBuf::from("<input>")),
            source: std::io::Error::new(e.kind(), format!("line {line}: read failed: {e}")),
        }
    }

    /// The next non-blank line, `None` at the end. A read failure is an error; a line that
    /// cannot be split (unterminated quote) is an inner error naming the line.
    ///
    /// A line that lies whole in the reader's buffer (every line of in-memory input, most
    /// lines of a file) is split where it lies, without a copy; it is consumed on the next
    /// call.
    #[allow(clippy::type_complexity)]
    pub fn next_record(&mut self) -> Result<Option<Result<Record<'_>>>> {
        if self.pending > 0 {
            self.r.consume(self.pending);
            self.pending = 0;
        }
        let split = loop {
            let whole = match self.r.fill_buf() {
                Ok(avail) => memchr::memchr(b'\n', avail).map(|i| i + 1),
                Err(e) => return Err(Self::read_error(&self.file, e, self.line + 1)),
            };
            let len = match whole {
                Some(n) => n,
                None => {
                    self.buf.clear();
                    match self.r.read_until(b'\n', &mut self.buf) {
                        Ok(0) => return Ok(None),
                        Ok(n) => n,
                        Err(e) => return Err(Self::read_error(&self.file, e, self.line + 1)),
                    }
                }
            };
            self.line += 1;
            let line: &[u8] = match whole {
                Some(_) => match self.r.fill_buf() {
                    Ok(avail) => &avail[..len],
                    Err(e) => return Err(Self::read_error(&self.file, e, self.line + 1)),
                },
                None => &self.buf[..len],
            };
            let mut end = len;
            while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
                end -= 1;
            }
            // A UTF-8 byte-order mark before the first line (what some spreadsheet programs
            // write) is not part of its first field.
            let start = if self.line == 1 && line[..end].starts_with(UTF8_BOM) {
                UTF8_BOM.len()
            } else {
                0
            };
            if line[start..end].iter().all(u8::is_ascii_whitespace) {
                if whole.is_some() {
                    self.r.consume(len);
                }
                continue;
            }
            let split = split_line(
                &line[start..end],
                &mut self.data,
                &mut self.bounds,
                self.file.as_deref(),
                self.line,
            );
            if whole.is_some() {
                self.pending = len;
            }
            self.end = end;
            self.start = start;
            break split;
        };
        self.quoted = match split {
            Ok(q) => q,
            Err(e) => return Ok(Some(Err(e))),
        };
        let data: &[u8] = if self.quoted {
            &self.data
        } else if self.pending > 0 {
            match self.r.fill_buf() {
                Ok(avail) => &avail[self.start..self.end],
                Err(e) => return Err(Self::read_error(&self.file, e, self.line)),
            }
        } else {
            &self.buf[self.start..self.end]
        };
        Ok(Some(Ok(Record {
            data,
            bounds: &self.bounds,
            line: self.line,
        })))
    }
}

/// Splits `line` at commas into `bounds`: ranges of `line` itself, or of `data` (the
/// unquoted fields) when the line holds a quote; returns whether it did.
fn split_line(
    line: &[u8],
    data: &mut Vec<u8>,
    bounds: &mut Vec<(usize, usize)>,
    file: Option<&Path>,
    line_no: u64,
) -> Result<bool> {
    data.clear();
    bounds.clear();
    if memchr::memchr(b'"', line).is_none() {
        let mut start = 0;
        for_each_comma(line, |i| {
            bounds.push((start, i));
            start = i + 1;
        });
        bounds.push((start, line.len()));
        return Ok(false);
    }
    let mut i = 0;
    loop {
        let start = data.len();
        if line.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match line.get(i) {
                    None => {
                        return Err(BmsError::parse(
                            Location::new(file.map(Path::to_path_buf))
                                .line(line_no)
                                .column(bounds.len() + 1, None),
                            "unterminated quoted field",
                        ));
                    }
                    Some(b'"') if line.get(i + 1) == Some(&b'"') => {
                        data.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&b) => {
                        data.push(b);
                        i += 1;
                    }
                }
            }
            while i < line.len() && line[i] != b',' {
                data.push(line[i]);
                i += 1;
            }
        } else {
            while i < line.len() && line[i] != b',' {
                data.push(line[i]);
                i += 1;
            }
        }
        bounds.push((start, data.len()));
        if i >= line.len() {
            return Ok(true);
        }
        i += 1;
    }
}

/// Calls `f` with the index of every comma in `line`, in order: eight bytes at a time
/// (commas are ~20 bytes apart in the number-heavy lines here, too dense for `memchr`'s
/// per-call set-up to pay off).
#[inline]
pub fn for_each_comma(line: &[u8], mut f: impl FnMut(usize)) {
    const COMMAS: u64 = u64::from_ne_bytes([b','; 8]);
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut words = line.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let t = u64::from_le_bytes(w.try_into().expect("eight bytes")) ^ COMMAS;
        // 0x80 in exactly the bytes of `t` that are zero (no carries between bytes).
        let mut zero = !(((t & LOW7) + LOW7) | t | LOW7);
        while zero != 0 {
            f(at + (zero.trailing_zeros() / 8) as usize);
            zero &= zero - 1;
        }
        at += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b',' {
            f(at + i);
        }
    }
}

/// Appends a CSV text field, quoted when it holds a separator, quote or line break (the
/// quoting every CSV this project writes uses, and its readers undo).
pub fn push_text(out: &mut String, s: &str) {
    // A leading U+FEFF is quoted too: unquoted as a file's first bytes, the readers would
    // take it for a byte-order mark and drop it (found by fuzzing, target `batch_csv`).
    if s.contains([',', '"', '\n', '\r']) || s.starts_with('\u{feff}') {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    /// Every record of `text` as (line number, fields) or (line number, error).
    fn records(r: impl std::io::BufRead) -> Vec<(u64, std::result::Result<Vec<String>, String>)> {
        let mut rdr = LineReader::new(r, None);
        let mut out = Vec::new();
        while let Some(rec) = rdr.next_record().unwrap() {
            out.push(match rec {
                Ok(rec) => (
                    rec.line,
                    Ok(rec
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect()),
                ),
                Err(e) => (rdr.line, Err(e.to_string())),
            });
        }
        out
    }

    #[test]
    fn lines_read_in_place_or_copied_give_the_same_records() {
        let long = "9".repeat(300);
        let text = format!(
            "a,b,c\r\n\n  \r\n{long},x,\"q,\"\"uoted\"\"\",\nno,newline,\"open\n,,\nlast,{long}"
        );
        let want: Vec<(u64, std::result::Result<Vec<String>, String>)> = vec![
            (1, Ok(vec!["a".into(), "b".into(), "c".into()])),
            (
                4,
                Ok(vec![
                    long.clone(),
                    "x".into(),
                    "q,\"uoted\"".into(),
                    String::new(),
                ]),
            ),
            (5, Err("unterminated quoted field".into())),
            (6, Ok(vec![String::new(), String::new(), String::new()])),
            (7, Ok(vec!["last".into(), long.clone()])),
        ];
        let check = |got: Vec<(u64, std::result::Result<Vec<String>, String>)>, how: &str| {
            assert_eq!(got.len(), want.len(), "{how}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0, w.0, "{how}: line number");
                match (&g.1, &w.1) {
                    (Err(g), Err(w)) => assert!(g.contains(w), "{how}: {g}"),
                    _ => assert_eq!(g.1, w.1, "{how}"),
                }
            }
        };
        // In memory: every line in place.
        check(records(text.as_bytes()), "slice");
        // Small buffers: lines across the buffer's end are copied, the others not.
        for cap in [1, 2, 7, 16, 64, 301, 4096] {
            check(
                records(BufReader::with_capacity(cap, text.as_bytes())),
                &format!("BufReader of {cap} bytes"),
            );
        }
    }

    #[test]
    fn commas_found_eight_bytes_at_a_time_match_a_byte_scan() {
        let mut line = Vec::new();
        for n in 0..200u32 {
            // Commas at every spacing, next to bytes that differ from ',' in one bit and
            // to bytes with the high bit set.
            line.push(match n.wrapping_mul(2_654_435_761) % 7 {
                0 | 1 => b',',
                2 => b'-',
                3 => b'.',
                4 => 0xac,
                5 => b'0' + (n % 10) as u8,
                _ => 0x2d ^ 0x01,
            });
            let mut got = Vec::new();
            for_each_comma(&line, |i| got.push(i));
            let want: Vec<usize> = (0..line.len()).filter(|&i| line[i] == b',').collect();
            assert_eq!(got, want, "{line:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn an_atomic_file_refuses_a_target_that_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let e = AtomicFile::create(&link)
            .err()
            .expect("a symlink is refused");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: is a symlink to {}; give the path it points to (an output is never written through a link, nor replaces one)",
                link.display(),
                outside.display()
            )
        );
        let sub = dir.path().join("sub.csv");
        std::fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, |w| w.write_all(b"x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: is a directory; give a file path", sub.display())
        );
        assert!(check_output_dir(&sub).is_ok());
        let e = check_output_dir(&outside).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "outside: is a regular file, not a directory; refused: it must be a directory or a new path"
            ),
            "{e}"
        );
        // Nothing was left behind, and the link and its target are as they were.
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        // A regular file, a new path and a new path in a missing directory pass.
        assert!(check_output_file(&outside).is_ok());
        assert!(check_output_file(&dir.path().join("new.csv")).is_ok());
        assert!(check_output_file(&dir.path().join("missing/new.csv")).is_ok());
        assert!(check_output_file(&outside.join("below-a-file.csv")).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn an_atomic_file_whose_target_became_a_symlink_is_not_renamed_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().write_all(b"new").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, &target).unwrap();
        let e = f.commit().unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
        assert!(
            std::fs::symlink_metadata(&target)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        // The temporary is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
