//! The batch scoring CSV (SPEC §6): no header, each line `VIN,Date,f1,…,fW`, optionally
//! followed by a label column (the training layout `bms windows --labels` writes).
//!
//! Numbers are parsed as f64 and handed on as f32, as pandas + XGBoost do. A line with the
//! wrong number of fields, an empty VIN, a bad date or an unparsable number is a reject
//! (lenient) or an error (strict); blank lines are skipped and not counted.

use std::io::{BufRead, Write};
use std::path::Path;

use ndarray::Array2;

use super::{
    LineReader, ReadMode, ReadReport, Record, RejectSink, fmt_f32, open, parse_date, parse_f32,
    parse_f64, push_text, write_atomic,
};
use crate::error::{BmsError, Location, Result};
use crate::window::{WindowBatch, WindowKey};

/// Fingerprints of (VIN, Date) keys to the line that had them first; the fingerprints are
/// already hashes, so the map uses their low bits as they are.
pub type FingerprintMap =
    std::collections::HashMap<u128, u64, std::hash::BuildHasherDefault<FingerprintHasher>>;

/// The hasher of [`FingerprintMap`]: the low 64 bits of the fingerprint.
#[derive(Debug, Default, Clone, Copy)]
pub struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// Accepted lines of a batch file.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchData {
    pub keys: Vec<WindowKey>,
    /// `[accepted lines, width]`.
    pub x: Array2<f32>,
    /// Present when the file was read with labels.
    pub labels: Option<Vec<f32>>,
    /// Source line of each accepted row.
    pub lines: Vec<u64>,
}

impl BatchData {
    /// Removes the rows that hold a missing (NaN) feature, for a model that does not
    /// handle missing values (SPEC §7); returns the source line of each removed row and
    /// the 1-based column of its first NaN (`VIN` is column 1).
    pub fn remove_missing(&mut self) -> Vec<(u64, usize)> {
        let first_nan: Vec<Option<usize>> = self
            .x
            .rows()
            .into_iter()
            .map(|r| r.iter().position(|v| v.is_nan()))
            .collect();
        if first_nan.iter().all(Option::is_none) {
            return Vec::new();
        }
        let keep: Vec<usize> = (0..first_nan.len())
            .filter(|&i| first_nan[i].is_none())
            .collect();
        let removed = first_nan
            .iter()
            .zip(&self.lines)
            .filter_map(|(k, &line)| k.map(|k| (line, k + 3)))
            .collect();
        self.keep_rows(&keep);
        removed
    }

    /// A 128-bit fingerprint of each row's (VIN, Date), for
    /// [`BatchData::remove_duplicates`]: two digests of std's `DefaultHasher` (fixed
    /// keys) salted differently, so that a set of them can be kept for a whole input (16 bytes a window,
    /// computed where the lines are parsed, in parallel) instead of the keys themselves.
    /// Two different keys share a fingerprint with probability about 2⁻¹²⁸.
    pub fn key_fingerprints(&self) -> Vec<u128> {
        use std::hash::{Hash, Hasher};
        self.keys
            .iter()
            .map(|k| {
                let half = |salt: u8| {
                    let mut h = std::hash::DefaultHasher::new();
                    h.write_u8(salt);
                    k.vin.hash(&mut h);
                    k.date.hash(&mut h);
                    h.finish()
                };
                (u128::from(half(1)) << 64) | u128::from(half(2))
            })
            .collect()
    }

    /// Removes the rows whose (VIN, Date) an earlier row of the same input had (SPEC §6:
    /// the first line of a window is scored, later ones are rejects). `fingerprints` are
    /// this part's [`BatchData::key_fingerprints`]; `seen` maps the fingerprint of each
    /// key to its line across the calls for one input; `line0 - 1` is added to this
    /// part's lines. Returns (line, first line) of each removed row.
    pub fn remove_duplicates(
        &mut self,
        fingerprints: &[u128],
        seen: &mut FingerprintMap,
        line0: u64,
    ) -> Vec<(u64, u64)> {
        debug_assert_eq!(fingerprints.len(), self.keys.len());
        let mut removed = Vec::new();
        let mut keep = Vec::with_capacity(self.keys.len());
        for (i, (&fp, &line)) in fingerprints.iter().zip(&self.lines).enumerate() {
            let line = line + line0 - 1;
            match seen.entry(fp) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    removed.push((line, *first.get()))
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(line);
                    keep.push(i);
                }
            }
        }
        if !removed.is_empty() {
            self.keep_rows(&keep);
        }
        removed
    }

    fn keep_rows(&mut self, keep: &[usize]) {
        self.x = self.x.select(ndarray::Axis(0), keep);
        self.lines = keep.iter().map(|&i| self.lines[i]).collect();
        self.keys = keep.iter().map(|&i| self.keys[i].clone()).collect();
        if let Some(labels) = &self.labels {
            self.labels = Some(keep.iter().map(|&i| labels[i]).collect());
        }
    }
}

/// Options for [`read_batch_csv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Feature values per line (84 for the reference contract).
    pub width: usize,
    /// Expect a trailing label column.
    pub labels: bool,
    pub mode: ReadMode,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            width: 84,
            labels: false,
            mode: ReadMode::Lenient,
        }
    }
}

pub fn read_batch_csv(path: &Path, options: BatchOptions) -> Result<ReadReport<BatchData>> {
    read_batch_csv_from(open(path)?, Some(path), options)
}

pub fn read_batch_csv_from<R: BufRead>(
    reader: R,
    file: Option<&Path>,
    options: BatchOptions,
) -> Result<ReadReport<BatchData>> {
    if options.width == 0 {
        return Err(BmsError::invalid("batch width", "must be at least 1"));
    }
    let mut rdr = LineReader::new(reader, file);
    let mut sink = RejectSink::new(options.mode);
    let mut keys = Vec::new();
    let mut x: Vec<f32> = Vec::new();
    let mut labels = Vec::new();
    let mut lines = Vec::new();
    let mut read = 0u64;
    let fields = 2 + options.width + usize::from(options.labels);
    let mut row = vec![0f32; options.width];
    while let Some(rec) = rdr.next_record()? {
        read += 1;
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                sink.reject(e)?;
                continue;
            }
        };
        let line = rec.line;
        match parse_line(&rec, file, line, fields, &mut row, options.labels) {
            Ok((key, label)) => {
                keys.push(key);
                x.extend_from_slice(&row);
                if let Some(l) = label {
                    labels.push(l);
                }
                lines.push(line);
            }
            Err(e) => sink.reject(e)?,
        }
    }
    let n = keys.len();
    Ok(ReadReport {
        data: BatchData {
            keys,
            x: Array2::from_shape_vec((n, options.width), x).expect("n × width values"),
            labels: options.labels.then_some(labels),
            lines,
        },
        read,
        accepted: n as u64,
        rejects: sink.rejects,
    })
}

/// Whether a batch CSV carries labels: its first non-blank line (in `head`, the file's
/// first bytes) has `width + 3` fields (`VIN,Date,f1,…,fW,label`, what `bms windows
/// --labels` writes) rather than `width + 2`. `false` when there is no complete line.
pub fn has_label_column(head: &[u8], width: usize) -> bool {
    let mut rdr = LineReader::new(head, None);
    match rdr.next_record() {
        Ok(Some(Ok(rec))) => rec.len() == width + 3,
        _ => false,
    }
}

/// Rows of a scoring request body, row-major `[n, width]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScoringRows {
    pub n: usize,
    pub x: Vec<f32>,
    /// (row, key) of the rows that came as reference batch lines.
    pub keys: Vec<(usize, WindowKey)>,
}

/// Reads a scoring request body (the `/invocations` CSV of `bms serve`): one record per
/// line (LF or CRLF, blank lines skipped, fields quoted as in every CSV here), each either
/// `width` feature values (SageMaker's convention) or a reference batch line
/// `VIN,Date,f1,…,fW`, parsed exactly as [`read_batch_csv_from`] parses it. The first bad
/// record is the error, naming its line and column.
pub fn read_scoring_csv(body: &[u8], width: usize) -> Result<ScoringRows> {
    if width == 0 {
        return Err(BmsError::invalid("batch width", "must be at least 1"));
    }
    let mut rdr = LineReader::new(body, None);
    let mut out = ScoringRows {
        x: Vec::with_capacity(width * (body.len() / (width * 8 + 1) + 1)),
        ..ScoringRows::default()
    };
    let mut row = vec![0f32; width];
    while let Some(rec) = rdr.next_record()? {
        let rec = rec?;
        let line = rec.line;
        if rec.len() == width {
            for (k, v) in rec.iter().enumerate() {
                let value = parse_f32(v).map_err(|reason| {
                    BmsError::parse(Location::new(None).line(line).column(k + 1, None), reason)
                })?;
                out.x.push(value);
            }
        } else if rec.len() == width + 2 {
            let (key, _) = parse_line(&rec, None, line, width + 2, &mut row, false)?;
            out.keys.push((out.n, key));
            out.x.extend_from_slice(&row);
        } else {
            return Err(BmsError::parse(
                Location::new(None).line(line),
                format!(
                    "expected {width} values (or VIN, Date and {width} values), found {} fields",
                    rec.len()
                ),
            ));
        }
        out.n += 1;
    }
    Ok(out)
}

fn parse_line(
    rec: &Record<'_>,
    file: Option<&Path>,
    line: u64,
    fields: usize,
    row: &mut [f32],
    with_label: bool,
) -> Result<(WindowKey, Option<f32>)> {
    let loc = |col: usize| {
        Location::new(file.map(Path::to_path_buf))
            .line(line)
            .column(col + 1, None)
    };
    if rec.len() != fields {
        return Err(BmsError::parse(
            Location::new(file.map(Path::to_path_buf)).line(line),
            format!(
                "expected {fields} fields (VIN, Date, {} features{}), found {}",
                row.len(),
                if with_label { ", label" } else { "" },
                rec.len()
            ),
        ));
    }
    let vin = std::str::from_utf8(rec.get(0))
        .map_err(|_| BmsError::parse(loc(0), "VIN is not valid UTF-8"))?
        .trim();
    if vin.is_empty() {
        return Err(BmsError::parse(loc(0), "empty VIN"));
    }
    let date = parse_date(rec.get(1)).map_err(|reason| BmsError::parse(loc(1), reason))?;
    for (k, out) in row.iter_mut().enumerate() {
        *out = parse_f32(rec.get(2 + k)).map_err(|reason| BmsError::parse(loc(2 + k), reason))?;
    }
    let label = if with_label {
        let col = fields - 1;
        let v = parse_f64(rec.get(col)).map_err(|reason| BmsError::parse(loc(col), reason))?;
        if !(v == 0.0 || v == 1.0) {
            return Err(BmsError::parse(
                loc(col),
                format!("label {v} is not 0 or 1"),
            ));
        }
        Some(v as f32)
    } else {
        None
    };
    Ok((
        WindowKey {
            vin: vin.to_owned(),
            date,
        },
        label,
    ))
}

/// Writes windows in the batch layout; with `labels`, each line ends with its label.
/// Written atomically.
pub fn write_batch_csv(path: &Path, batch: &WindowBatch, labels: bool) -> Result<()> {
    write_atomic(path, |w| write_batch_csv_to(w, batch, labels))
}

pub fn write_batch_csv_to<W: Write>(
    w: &mut W,
    batch: &WindowBatch,
    labels: bool,
) -> std::io::Result<()> {
    let mut line = String::new();
    for (i, key) in batch.keys.iter().enumerate() {
        line.clear();
        push_text(&mut line, &key.vin);
        line.push(',');
        line.push_str(&key.date.format("%Y-%m-%d").to_string());
        for &v in batch.x.row(i) {
            line.push(',');
            fmt_f32(&mut line, v);
        }
        if labels {
            line.push(',');
            fmt_f32(&mut line, batch.y[i]);
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}
