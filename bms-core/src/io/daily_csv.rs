//! The daily CSV (SPEC §4).
//!
//! Header: `VIN,Date,TotalVoltage,TotalCurrent,CellMaxVoltage,CellMinVoltage,MaxTemperature,MinTemperature`
//! exactly, then any of `Label` and the extended columns (`spread_mean`, `spread_max`,
//! `temp_delta_max`, `soc_deviation_mean`, `frames`), each at most once, in any order.
//! Columns a file lacks read as NaN. The writer emits the reference header with `Label`,
//! then the extended columns.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use chrono::NaiveDate;

use super::{
    LineReader, ReadMode, ReadReport, Record, RejectSink, fmt_f64, open, parse_date, parse_f64,
    write_atomic,
};
use crate::daily::{
    DailyColumn, DailyRow, DailyTable, EXTENDED_COLUMNS, N_DAILY_COLUMNS, REFERENCE_COLUMNS,
};
use crate::error::{BmsError, Location, Result};

/// The reference header line.
pub const REFERENCE_HEADER: &str = "VIN,Date,TotalVoltage,TotalCurrent,CellMaxVoltage,CellMinVoltage,MaxTemperature,MinTemperature,Label";

#[derive(Clone, Copy)]
enum Slot {
    Vin,
    Date,
    Value(DailyColumn),
    Label,
}

fn parse_header(rec: &Record<'_>, file: Option<&Path>) -> Result<Vec<Slot>> {
    let names: Vec<String> = rec
        .iter()
        .map(|f| {
            String::from_utf8_lossy(f)
                .trim()
                .trim_start_matches('\u{feff}')
                .to_owned()
        })
        .collect();
    let header_err = || BmsError::Header {
        file: file.map(Path::to_path_buf),
        expected: format!(
            "'{REFERENCE_HEADER}' optionally followed by {}",
            EXTENDED_COLUMNS.map(|c| c.name()).join(", ")
        ),
        found: format!("'{}'", names.join(",")),
    };
    let mut slots = vec![Slot::Vin, Slot::Date];
    slots.extend(REFERENCE_COLUMNS.map(Slot::Value));
    if names.len() < slots.len() {
        return Err(header_err());
    }
    let fixed = ["VIN", "Date"]
        .into_iter()
        .chain(REFERENCE_COLUMNS.map(|c| c.name()));
    for (i, want) in fixed.enumerate() {
        if names[i] != want {
            return Err(BmsError::Header {
                file: file.map(Path::to_path_buf),
                expected: format!("column {} to be '{want}'", i + 1),
                found: format!("'{}' (header '{}')", names[i], names.join(",")),
            });
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for name in &names[slots.len()..] {
        if seen.contains(&name.as_str()) {
            return Err(BmsError::Header {
                file: file.map(Path::to_path_buf),
                expected: "each column once".into(),
                found: format!("'{name}' twice"),
            });
        }
        let slot = if name == "Label" {
            Slot::Label
        } else {
            match EXTENDED_COLUMNS.iter().find(|c| c.name() == name) {
                Some(&c) => Slot::Value(c),
                None => return Err(header_err()),
            }
        };
        seen.push(name);
        slots.push(slot);
    }
    Ok(slots)
}

/// Reads a daily CSV file.
pub fn read_daily_csv(path: &Path, mode: ReadMode) -> Result<ReadReport<DailyTable>> {
    read_daily_csv_from(open(path)?, Some(path), mode)
}

/// Reads daily CSV text from any reader; `file` names it in errors.
pub fn read_daily_csv_from<R: BufRead>(
    reader: R,
    file: Option<&Path>,
    mode: ReadMode,
) -> Result<ReadReport<DailyTable>> {
    let mut rdr = LineReader::new(reader, file);
    let mut slots = None;
    let mut sink = RejectSink::new(mode);
    let mut rows = Vec::new();
    let mut seen: HashMap<(String, NaiveDate), u64> = HashMap::new();
    let mut read = 0u64;
    while let Some(rec) = rdr.next_record()? {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) if slots.is_some() => {
                read += 1;
                sink.reject(e)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let line = rec.line;
        let Some(slots) = slots.as_ref() else {
            slots = Some(parse_header(&rec, file)?);
            continue;
        };
        read += 1;
        match parse_row(&rec, slots, file, line) {
            Ok(row) => match seen.get(&(row.vin.clone(), row.date)) {
                Some(&first) => sink.reject(BmsError::DuplicateDay {
                    file: file.map(Path::to_path_buf),
                    vin: row.vin,
                    date: row.date.to_string(),
                    first_line: first,
                    second_line: line,
                })?,
                None => {
                    seen.insert((row.vin.clone(), row.date), line);
                    rows.push(row);
                }
            },
            Err(e) => sink.reject(e)?,
        }
    }
    if slots.is_none() {
        return Err(BmsError::Header {
            file: file.map(Path::to_path_buf),
            expected: format!("'{REFERENCE_HEADER}'"),
            found: "an empty file".into(),
        });
    }
    Ok(ReadReport {
        accepted: rows.len() as u64,
        data: DailyTable { rows },
        read,
        rejects: sink.rejects,
    })
}

fn parse_row(rec: &Record<'_>, slots: &[Slot], file: Option<&Path>, line: u64) -> Result<DailyRow> {
    let loc = |col: usize| {
        let name = match slots.get(col) {
            Some(Slot::Vin) => "VIN",
            Some(Slot::Date) => "Date",
            Some(Slot::Label) => "Label",
            Some(Slot::Value(c)) => c.name(),
            None => "",
        };
        Location::new(file.map(Path::to_path_buf))
            .line(line)
            .column(col + 1, Some(name).filter(|n| !n.is_empty()))
    };
    if rec.len() != slots.len() {
        return Err(BmsError::parse(
            Location::new(file.map(Path::to_path_buf)).line(line),
            format!("expected {} fields, found {}", slots.len(), rec.len()),
        ));
    }
    let mut vin = String::new();
    let mut date = None;
    let mut values = [f64::NAN; N_DAILY_COLUMNS];
    let mut label = f64::NAN;
    for (col, (slot, field)) in slots.iter().zip(rec.iter()).enumerate() {
        match slot {
            Slot::Vin => {
                let v = std::str::from_utf8(field)
                    .map_err(|_| BmsError::parse(loc(col), "VIN is not valid UTF-8"))?
                    .trim();
                if v.is_empty() {
                    return Err(BmsError::parse(loc(col), "empty VIN"));
                }
                vin = v.to_owned();
            }
            Slot::Date => {
                date = Some(parse_date(field).map_err(|reason| BmsError::parse(loc(col), reason))?);
            }
            Slot::Value(c) => {
                values[c.index()] =
                    parse_f64(field).map_err(|reason| BmsError::parse(loc(col), reason))?;
            }
            Slot::Label => {
                let v = parse_f64(field).map_err(|reason| BmsError::parse(loc(col), reason))?;
                if !(v.is_nan() || v == 0.0 || v == 1.0) {
                    return Err(BmsError::parse(
                        loc(col),
                        format!("label {v} is not 0, 1 or nan"),
                    ));
                }
                label = v;
            }
        }
    }
    Ok(DailyRow {
        vin,
        date: date.expect("Date is a required column"),
        values,
        label,
    })
}

/// Writes a daily table as CSV: the reference header (with `Label`), followed by the
/// extended columns when `extended` is true. Written atomically.
pub fn write_daily_csv(path: &Path, table: &DailyTable, extended: bool) -> Result<()> {
    write_atomic(path, |w| write_daily_csv_to(w, table, extended))
}

pub fn write_daily_csv_to<W: Write>(
    w: &mut W,
    table: &DailyTable,
    extended: bool,
) -> std::io::Result<()> {
    let mut line = String::from(REFERENCE_HEADER);
    if extended {
        for c in EXTENDED_COLUMNS {
            line.push(',');
            line.push_str(c.name());
        }
    }
    line.push('\n');
    w.write_all(line.as_bytes())?;
    for r in &table.rows {
        line.clear();
        super::push_text(&mut line, &r.vin);
        line.push(',');
        line.push_str(&r.date.format("%Y-%m-%d").to_string());
        for c in REFERENCE_COLUMNS {
            line.push(',');
            fmt_f64(&mut line, r.get(c));
        }
        line.push(',');
        fmt_f64(&mut line, r.label);
        if extended {
            for c in EXTENDED_COLUMNS {
                line.push(',');
                fmt_f64(&mut line, r.get(c));
            }
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}
