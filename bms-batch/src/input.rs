//! What an input file holds, told from its extension and first line or Parquet schema.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result, bail};
use bms_core::{Chemistry, OcvCurve};

/// File formats read and written, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Csv,
    Parquet,
    /// A GB/T 32960 capture: concatenated packets as a TCP stream carries them (input only).
    Capture,
}

impl FileKind {
    /// `.csv`, `.parquet` / `.pq`, or `.bin` / `.gbt32960` for a capture (any case); a file
    /// with another extension that begins with a GB/T 32960 start symbol is a capture too;
    /// an error naming the file otherwise.
    pub fn of(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("csv") => Ok(FileKind::Csv),
            Some("parquet") | Some("pq") => Ok(FileKind::Parquet),
            Some("bin") | Some("gbt32960") => Ok(FileKind::Capture),
            _ if starts_like_capture(path) => Ok(FileKind::Capture),
            _ => bail!(
                "{}: cannot tell the format from the extension (use .csv, .parquet, or .bin \
                 for a GB/T 32960 capture)",
                path.display()
            ),
        }
    }

    /// The kind of an output file: CSV or Parquet (a capture is an input only).
    pub fn of_output(path: &Path) -> Result<Self> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("csv") => Ok(FileKind::Csv),
            Some("parquet") | Some("pq") => Ok(FileKind::Parquet),
            _ => bail!(
                "{}: cannot tell the format of this output from its extension (use .csv or .parquet)",
                path.display()
            ),
        }
    }
}

fn starts_like_capture(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| bms_core::gbt32960::looks_like_capture(&head))
}

/// What an input file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Reference batch CSV: no header, `VIN,Date,f1,…,fW` per line.
    Batch,
    /// Daily table, CSV (reference header) or Parquet.
    Daily,
    /// Raw frames: CSV, Parquet or a GB/T 32960 capture.
    Frames,
}

impl InputFormat {
    /// Every format, in the order of their names in help texts.
    pub const ALL: [InputFormat; 3] = [InputFormat::Batch, InputFormat::Daily, InputFormat::Frames];

    /// The name used on command lines, in Python and in `summary.json`.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Batch => "batch",
            InputFormat::Daily => "daily",
            InputFormat::Frames => "frames",
        }
    }

    /// What one record of this format is called in messages.
    pub fn records(self) -> &'static str {
        match self {
            InputFormat::Batch => "lines",
            InputFormat::Daily => "daily rows",
            InputFormat::Frames => "frames",
        }
    }
}

impl std::fmt::Display for InputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        InputFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown input format '{s}' (batch, daily or frames)"))
    }
}

/// Tells a file's format from its extension and first line (CSV) or schema (Parquet).
pub fn detect_format(path: &Path) -> Result<InputFormat> {
    match FileKind::of(path)? {
        FileKind::Capture => Ok(InputFormat::Frames),
        FileKind::Parquet => {
            bms_core::io::parquet::check_footer(path)?;
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let meta =
                parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&file, Default::default())
                    .with_context(|| format!("{}: not a Parquet file", path.display()))?;
            let schema = meta.schema();
            if schema.index_of("cell_voltages").is_ok() {
                Ok(InputFormat::Frames)
            } else if schema.index_of("VIN").is_ok() && schema.index_of("Date").is_ok() {
                Ok(InputFormat::Daily)
            } else {
                bail!(
                    "{}: Parquet with neither frame columns (cell_voltages) nor daily columns (VIN, Date); use --format",
                    path.display()
                )
            }
        }
        FileKind::Csv => {
            let Some(first) = first_line(path)? else {
                bail!("{}: empty file", path.display());
            };
            let head = first.to_ascii_lowercase();
            if head.starts_with("vin,date,") {
                let third = first.split(',').nth(2).unwrap_or("").trim();
                if bms_core::DailyColumn::from_name(third).is_err() {
                    bail!(
                        "{}: the first line '{}' is a header, but its third column '{third}' is \
                         no daily column (a daily table's header is VIN,Date,TotalVoltage,…); \
                         batch files have no header line: remove it",
                        path.display(),
                        shorten(&first)
                    );
                }
                Ok(InputFormat::Daily)
            } else if head.starts_with("vin,timestamp,") {
                Ok(InputFormat::Frames)
            } else {
                Ok(InputFormat::Batch)
            }
        }
    }
}

/// The first non-blank line of a text file, trimmed, without a byte-order mark (the readers
/// skip it too); `None` for a file of blank lines only.
fn first_line(path: &Path) -> Result<Option<String>> {
    let mut r = std::io::BufReader::new(
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
    );
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", path.display()))?
            == 0
        {
            return Ok(None);
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_start_matches('\u{feff}').trim();
        if !line.is_empty() {
            return Ok(Some(line.to_owned()));
        }
    }
}

/// The first `max` characters of a line for a message, `…` when cut.
fn shorten(line: &str) -> String {
    const MAX: usize = 60;
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// What the first non-blank line of a CSV input looks like, for the message of a run
/// that rejected every line: a header and which kind, or its number of fields against the
/// `width + 2` of a batch line. `None` when it cannot be read.
pub fn describe_first_line(path: &Path, width: usize) -> Option<String> {
    let line = first_line(path).ok()??;
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let numeric = |f: &str| bms_core::io::parse_f64(f.as_bytes()).is_ok();
    let looks_header = fields
        .iter()
        .skip(2)
        .take(3)
        .any(|f| !f.is_empty() && !numeric(f));
    let lower: Vec<String> = fields
        .iter()
        .take(2)
        .map(|f| f.to_ascii_lowercase())
        .collect();
    let what = if looks_header {
        match (
            lower.first().map(String::as_str),
            lower.get(1).map(String::as_str),
        ) {
            (Some("vin"), Some("date")) => {
                "is the header of a daily table (use --format daily)".into()
            }
            (Some("vin"), Some("timestamp")) => {
                "is the header of frames (use --format frames)".into()
            }
            (Some("date"), Some("vin")) => {
                "is a header with Date before VIN; a daily table starts VIN,Date,TotalVoltage,…"
                    .into()
            }
            _ => "is a header, which batch files do not have; a daily table starts \
                  VIN,Date,TotalVoltage,…"
                .to_owned(),
        }
    } else {
        format!(
            "has {} fields, where a batch line for this model has {} (VIN, Date and {width} values)",
            fields.len(),
            width + 2
        )
    };
    Some(format!("its first line '{}' {what}", shorten(&line)))
}

/// An OCV curve named by chemistry (`nmc`, `lfp`) or read from a `soc,volts` CSV file.
pub fn ocv_curve(spec: &str) -> Result<OcvCurve> {
    if let Ok(chem) = spec.parse::<Chemistry>() {
        return Ok(OcvCurve::for_chemistry(chem));
    }
    let text = std::fs::read_to_string(spec)
        .with_context(|| format!("--ocv '{spec}' is neither nmc, lfp nor a readable CSV file"))?;
    OcvCurve::from_csv_str(&text).with_context(|| format!("OCV table {spec}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip_and_unknown_ones_are_refused() {
        for f in InputFormat::ALL {
            assert_eq!(f.name().parse::<InputFormat>(), Ok(f));
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.name())
            );
        }
        assert!(
            "Batch"
                .parse::<InputFormat>()
                .unwrap_err()
                .contains("'Batch'")
        );
    }

    #[test]
    fn csv_formats_are_told_by_the_first_non_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("\n\nVIN,Date,TotalVoltage\n", Some(InputFormat::Daily)),
            ("vin,timestamp,x\n", Some(InputFormat::Frames)),
            ("V1,2024-01-01,1,2\n", Some(InputFormat::Batch)),
            ("\u{feff}VIN,Date,TotalVoltage\n", Some(InputFormat::Daily)),
            ("\u{feff}vin,timestamp,x\n", Some(InputFormat::Frames)),
            ("\n  \n", None),
        ] {
            let p = dir.path().join("in.csv");
            std::fs::write(&p, text).unwrap();
            match want {
                Some(f) => assert_eq!(detect_format(&p).unwrap(), f, "{text:?}"),
                None => {
                    let e = detect_format(&p).unwrap_err().to_string();
                    assert!(e.contains("in.csv: empty file"), "{e}");
                }
            }
        }
        let e = detect_format(&dir.path().join("x.txt")).unwrap_err();
        assert!(e.to_string().contains("x.txt"), "{e}");
    }
}
