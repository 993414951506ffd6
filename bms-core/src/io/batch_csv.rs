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
