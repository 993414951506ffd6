//! Frame CSV (SPEC §2): header
//! `vin,timestamp,pack_voltage,pack_current,soc,cell_v_1..cell_v_N,temp_1..temp_M[,alarm_flags]`.
//!
//! `timestamp` is integer milliseconds since the Unix epoch or an RFC 3339 time;
//! `alarm_flags` is a decimal or `0x` hexadecimal u32, empty when absent. Readings follow
//! the numeric rules of the daily CSV (`nan` or empty = invalid reading = NaN).

use std::io::{BufRead, Write};
use std::path::Path;

use super::{
    LineReader, ReadMode, ReadReport, Record, RejectSink, fmt_f64, open, parse_f64, push_text,
    write_atomic,
};
use crate::error::{BmsError, Location, Result};
use crate::frame::{FrameRef, Frames};

const FIXED: [&str; 5] = ["vin", "timestamp", "pack_voltage", "pack_current", "soc"];

#[derive(Debug, Clone, Copy)]
struct Layout {
    cells: usize,
    temps: usize,
    flags: bool,
}

impl Layout {
    fn fields(&self) -> usize {
        FIXED.len() + self.cells + self.temps + usize::from(self.flags)
    }
    fn column_name(&self, col: usize) -> String {
        if col < FIXED.len() {
            FIXED[col].to_owned()
        } else if col < FIXED.len() + self.cells {
            format!("cell_v_{}", col - FIXED.len() + 1)
        } else if col < FIXED.len() + self.cells + self.temps {
            format!("temp_{}", col - FIXED.len() - self.cells + 1)
        } else {
            "alarm_flags".to_owned()
        }
    }
}

fn header_text(cells: usize, temps: usize, flags: bool) -> String {
    let mut h = FIXED.join(",");
    for i in 1..=cells {
        h.push_str(&format!(",cell_v_{i}"));
    }
    for i in 1..=temps {
        h.push_str(&format!(",temp_{i}"));
    }
    if flags {
        h.push_str(",alarm_flags");
    }
    h
}

fn parse_header(rec: &Record<'_>, file: Option<&Path>) -> Result<Layout> {
    let names: Vec<String> = rec
        .iter()
        .map(|f| {
            String::from_utf8_lossy(f)
                .trim()
                .trim_start_matches('\u{feff}')
                .to_owned()
        })
        .collect();
    let err = |expected: String| BmsError::Header {
        file: file.map(Path::to_path_buf),
        expected,
        found: format!("'{}'", names.join(",")),
    };
    let generic = "'vin,timestamp,pack_voltage,pack_current,soc,cell_v_1..cell_v_N,temp_1..temp_M[,alarm_flags]' with N, M ≥ 1";
    if names.len() < FIXED.len() + 2 {
        return Err(err(generic.into()));
    }
    for (i, want) in FIXED.iter().enumerate() {
        if names[i] != *want {
            return Err(err(format!("column {} to be '{want}' in {generic}", i + 1)));
        }
    }
    let flags = names.last().is_some_and(|n| n == "alarm_flags");
    let body = &names[FIXED.len()..names.len() - usize::from(flags)];
    let cells = body.iter().take_while(|n| n.starts_with("cell_v_")).count();
    let temps = body.len() - cells;
    if cells == 0 || temps == 0 {
        return Err(err(generic.into()));
    }
    let want = header_text(cells, temps, flags);
    if names.join(",") != want {
        return Err(err(format!("'{want}'")));
    }
    Ok(Layout {
        cells,
        temps,
        flags,
    })
}

/// Reads a frame CSV file.
pub fn read_frame_csv(path: &Path, mode: ReadMode) -> Result<ReadReport<Frames>> {
    read_frame_csv_from(open(path)?, Some(path), mode)
}

pub fn read_frame_csv_from<R: BufRead>(
    reader: R,
    file: Option<&Path>,
    mode: ReadMode,
) -> Result<ReadReport<Frames>> {
    let mut rdr = LineReader::new(reader, file);
    let mut layout: Option<Layout> = None;
    let mut sink = RejectSink::new(mode);
    let mut frames = Frames::new();
    let mut read = 0u64;
    let mut cells = Vec::new();
    let mut temps = Vec::new();
    while let Some(rec) = rdr.next_record()? {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) if layout.is_some() => {
                read += 1;
                sink.reject(e)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let line = rec.line;
        let Some(lay) = layout else {
            layout = Some(parse_header(&rec, file)?);
            continue;
        };
        read += 1;
        match parse_frame(&rec, &lay, file, line, &mut cells, &mut temps) {
            Ok(f) => frames.push(f.with(&cells, &temps), line),
            Err(e) => sink.reject(e)?,
        }
    }
    if layout.is_none() {
        return Err(BmsError::Header {
            file: file.map(Path::to_path_buf),
            expected: "a frame CSV header".into(),
            found: "an empty file".into(),
        });
    }
    Ok(ReadReport {
        accepted: frames.len() as u64,
        data: frames,
        read,
        rejects: sink.rejects,
    })
}

/// The scalar part of a parsed frame; cells and probes are in the reader's buffers.
struct Scalars {
    vin: String,
    timestamp_ms: i64,
    pack_voltage: f64,
    pack_current: f64,
    soc: f64,
    alarm_flags: Option<u32>,
}

impl Scalars {
    fn with<'a>(&'a self, cells: &'a [f64], temps: &'a [f64]) -> FrameRef<'a> {
        FrameRef {
            vin: &self.vin,
            timestamp_ms: self.timestamp_ms,
            pack_voltage: self.pack_voltage,
            pack_current: self.pack_current,
            soc: self.soc,
            cell_voltages: cells,
            temperatures: temps,
            alarm_flags: self.alarm_flags,
        }
    }
}

/// Parses a timestamp: integer milliseconds since the epoch, or RFC 3339.
pub fn parse_timestamp(s: &str) -> std::result::Result<i64, String> {
    let t = s.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|_| format!("'{t}' is neither integer milliseconds nor an RFC 3339 time"))
}

fn parse_flags(s: &str) -> std::result::Result<Option<u32>, String> {
    parse_alarm_flags(s)
}

/// An `alarm_flags` field: a decimal or `0x` hexadecimal u32 (surrounding blanks
/// ignored), `None` when empty; every surface reads flags given as text with this.
pub fn parse_alarm_flags(s: &str) -> std::result::Result<Option<u32>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    };
    v.map(Some)
        .map_err(|_| format!("'{t}' is not a 32-bit alarm bitfield (decimal or 0x hex)"))
}

fn parse_frame(
    rec: &Record<'_>,
    lay: &Layout,
    file: Option<&Path>,
    line: u64,
    cells: &mut Vec<f64>,
    temps: &mut Vec<f64>,
) -> Result<Scalars> {
    let loc = |col: usize| {
        Location::new(file.map(Path::to_path_buf))
            .line(line)
            .column(col + 1, Some(&lay.column_name(col)))
    };
    if rec.len() != lay.fields() {
        return Err(BmsError::parse(
            Location::new(file.map(Path::to_path_buf)).line(line),
            format!("expected {} fields, found {}", lay.fields(), rec.len()),
        ));
    }
    let text = |col: usize| {
        std::str::from_utf8(rec.get(col)).map_err(|_| BmsError::parse(loc(col), "not valid UTF-8"))
    };
    let num = |col: usize| parse_f64(rec.get(col)).map_err(|r| BmsError::parse(loc(col), r));
    let vin = text(0)?.trim();
    if vin.is_empty() {
        return Err(BmsError::parse(loc(0), "empty VIN"));
    }
    let timestamp_ms = parse_timestamp(text(1)?).map_err(|r| BmsError::parse(loc(1), r))?;
    let scalars = Scalars {
        vin: vin.to_owned(),
        timestamp_ms,
        pack_voltage: num(2)?,
        pack_current: num(3)?,
        soc: num(4)?,
        alarm_flags: if lay.flags {
            let col = lay.fields() - 1;
            parse_flags(text(col)?).map_err(|r| BmsError::parse(loc(col), r))?
        } else {
            None
        },
    };
    cells.clear();
    for col in FIXED.len()..FIXED.len() + lay.cells {
        cells.push(num(col)?);
    }
    temps.clear();
    for col in FIXED.len() + lay.cells..FIXED.len() + lay.cells + lay.temps {
        temps.push(num(col)?);
    }
    Ok(scalars)
}

/// Writes frames as CSV. All frames must have the same numbers of cells and probes; the
/// `alarm_flags` column is written when any frame carries flags. Written atomically.
pub fn write_frame_csv(path: &Path, frames: &Frames) -> Result<()> {
    let mut err = None;
    let r = write_atomic(path, |w| {
        write_frame_csv_to(w, frames).map_err(|e| match e {
            FrameWriteError::Io(io) => io,
            FrameWriteError::Bms(b) => {
                err = Some(b);
                std::io::Error::other("invalid frames")
            }
        })
    });
    match err {
        Some(e) => Err(e),
        None => r,
    }
}

#[derive(Debug)]
pub enum FrameWriteError {
    Io(std::io::Error),
    Bms(BmsError),
}

impl From<std::io::Error> for FrameWriteError {
    fn from(e: std::io::Error) -> Self {
        FrameWriteError::Io(e)
    }
}

/// Streams frames as CSV to any writer (header included).
pub fn write_frame_csv_to<W: Write>(
    w: &mut W,
    frames: &Frames,
) -> std::result::Result<(), FrameWriteError> {
    let Some(first) = frames.iter().next() else {
        return Err(FrameWriteError::Bms(BmsError::invalid(
            "frames",
            "no frames to write (a frame CSV header needs the cell and probe counts)",
        )));
    };
    let (nc, nt) = (first.cell_voltages.len(), first.temperatures.len());
    let flags = frames.iter().any(|f| f.alarm_flags.is_some());
    let (mut writer, header) = FrameCsvWriter::new(nc, nt, flags);
    w.write_all(header.as_bytes())?;
    for (i, f) in frames.iter().enumerate() {
        writer.write_frame(w, &f).map_err(|e| match e {
            FrameWriteError::Bms(BmsError::Shape {
                what,
                expected,
                found,
            }) => FrameWriteError::Bms(BmsError::Shape {
                what: format!("frame {} ({}): {what}", i + 1, f.vin),
                expected,
                found,
            }),
            other => other,
        })?;
    }
    Ok(())
}

/// Writes frame lines one at a time, for producers that stream frames (the simulator).
#[derive(Debug)]
pub struct FrameCsvWriter {
    cells: usize,
    temps: usize,
    flags: bool,
    buf: String,
}

impl FrameCsvWriter {
    /// Creates a writer for frames of `cells` cells and `temps` probes and returns it with
    /// the header line to write first.
    pub fn new(cells: usize, temps: usize, flags: bool) -> (Self, String) {
        let mut h = header_text(cells, temps, flags);
        h.push('\n');
        (
            FrameCsvWriter {
                cells,
                temps,
                flags,
                buf: String::new(),
            },
            h,
        )
    }

    pub fn write_frame<W: Write>(
        &mut self,
        w: &mut W,
        f: &FrameRef<'_>,
    ) -> std::result::Result<(), FrameWriteError> {
        if f.cell_voltages.len() != self.cells {
            return Err(FrameWriteError::Bms(BmsError::Shape {
                what: "cell voltages per frame".into(),
                expected: self.cells,
                found: f.cell_voltages.len(),
            }));
        }
        if f.temperatures.len() != self.temps {
            return Err(FrameWriteError::Bms(BmsError::Shape {
                what: "temperatures per frame".into(),
                expected: self.temps,
                found: f.temperatures.len(),
            }));
        }
        let b = &mut self.buf;
        b.clear();
        push_text(b, f.vin);
        b.push(',');
        b.push_str(&f.timestamp_ms.to_string());
        for v in [f.pack_voltage, f.pack_current, f.soc] {
            b.push(',');
            fmt_f64(b, v);
        }
        for &v in f.cell_voltages.iter().chain(f.temperatures) {
            b.push(',');
            fmt_f64(b, v);
        }
        if self.flags {
            b.push(',');
            if let Some(fl) = f.alarm_flags {
                b.push_str(&fl.to_string());
            }
        }
        b.push('\n');
        w.write_all(b.as_bytes())?;
        Ok(())
    }
}
