//! The one error type of the core. Every variant carries what a caller needs to act:
//! where (file, line, column), what (value, expected vs. found).

use std::fmt;
use std::path::PathBuf;

/// Where in an input something went wrong. `line` is 1-based and counts physical lines of a
/// text file (the header is line 1) or rows of a Parquet file (first data row is row 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: Option<PathBuf>,
    pub line: Option<u64>,
    /// 1-based column number.
    pub column: Option<usize>,
    /// Column name, when the input has a header.
    pub column_name: Option<String>,
}

impl Location {
    pub fn new(file: Option<PathBuf>) -> Self {
        Location {
            file,
            ..Default::default()
        }
    }
    pub fn line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }
    pub fn column_name_only(mut self, name: &str) -> Self {
        self.column_name = Some(name.to_owned());
        self
    }
    pub fn column(mut self, column: usize, name: Option<&str>) -> Self {
        self.column = Some(column);
        self.column_name = name.map(str::to_owned);
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(file) = &self.file {
            parts.push(file.display().to_string());
        }
        if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        match (self.column, &self.column_name) {
            (Some(c), Some(n)) => parts.push(format!("column {c} ({n})")),
            (Some(c), None) => parts.push(format!("column {c}")),
            (None, Some(n)) => parts.push(format!("column {n}")),
            (None, None) => {}
        }
        if parts.is_empty() {
            f.write_str("<input>")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

fn opt_file(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

fn older_than(latest_ms: i64, advanced: bool) -> String {
    if advanced {
        format!("{latest_ms} ms, which the monitor was advanced to")
    } else {
        format!("the latest frame at {latest_ms} ms (frames must arrive in time order)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BmsError {
    /// A field, record or value of an input could not be used.
    #[error("{location}: {reason}")]
    Parse { location: Location, reason: String },

    /// The header of a file is not the one the format requires.
    #[error("{}header: expected {expected}, found {found}", opt_file(.file))]
    Header {
        file: Option<PathBuf>,
        expected: String,
        found: String,
    },

    /// The same (VIN, Date) appears twice in a daily table.
    #[error(
        "{}duplicate row for VIN {vin} on {date}: lines {first_line} and {second_line}",
        opt_file(.file)
    )]
    DuplicateDay {
        file: Option<PathBuf>,
        vin: String,
        date: String,
        first_line: u64,
        second_line: u64,
    },

    /// Two frames of one vehicle carry the same timestamp.
    #[error(
        "{}duplicate frame for VIN {vin} at timestamp {timestamp_ms} ms: lines {first_line} and {second_line}",
        opt_file(.file)
    )]
    DuplicateFrame {
        file: Option<PathBuf>,
        vin: String,
        timestamp_ms: i64,
        first_line: u64,
        second_line: u64,
    },

    /// A streaming consumer received a frame older than one it already has.
    #[error(
        "frame for VIN {vin} at {timestamp_ms} ms is older than the previous frame at {previous_ms} ms (frames of a vehicle must arrive in time order)"
    )]
    OutOfOrder {
        vin: String,
        timestamp_ms: i64,
        previous_ms: i64,
    },

    /// A streaming monitor was given a timestamp older than its latest frame's, or than
    /// the time it was advanced to (`advanced`). The monitor is unchanged.
    #[error(
        "timestamp {timestamp_ms} ms is older than {}",
        older_than(*.latest_ms, *.advanced)
    )]
    TimestampTooOld {
        timestamp_ms: i64,
        latest_ms: i64,
        advanced: bool,
    },

    /// A streaming monitor was given a second frame with its latest frame's timestamp. The
    /// monitor is unchanged.
    #[error(
        "a frame at {timestamp_ms} ms was already pushed (frames must have strictly increasing timestamps)"
    )]
    DuplicateTimestamp { timestamp_ms: i64 },

    /// A streaming monitor cannot answer yet (e.g. fewer closed days than a window needs).
    #[error("not ready: {reason}")]
    NotReady { reason: String },

    /// Two sizes that must agree do not.
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        what: String,
        expected: usize,
        found: usize,
    },

    /// A configuration or argument value is not acceptable.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },

    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model file could not be loaded or run: not ONNX, unsupported, or inconsistent.
    /// `reason` includes the engine's message; `source` keeps the engine's error itself.
    #[error("{}model: {reason}", opt_file(.file))]
    Model {
        file: Option<PathBuf>,
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The Arrow/Parquet layer refused a file or a batch. `message` includes the layer's
    /// message; `source` keeps its error itself.
    #[error("{}{message}", opt_file(.file))]
    Parquet {
        file: Option<PathBuf>,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl BmsError {
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        BmsError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BmsError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn model(reason: impl Into<String>) -> Self {
        BmsError::Model {
            file: None,
            reason: reason.into(),
            source: None,
        }
    }
    pub fn parse(location: Location, reason: impl Into<String>) -> Self {
        BmsError::Parse {
            location,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = BmsError> = std::result::Result<T, E>;
