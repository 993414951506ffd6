//! [`Summary`]: the counts and facts of one run, written to `summary.json`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::input::InputFormat;

/// Counts and facts of one run, written to `summary.json` by [`crate::StoreDir`] and read
/// back by `bms report` with [`Summary::read`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub input: String,
    pub format: Option<InputFormat>,
    pub model_id: String,
    pub threshold: f32,
    /// Records of the input: batch lines, daily rows or frames.
    pub rows_read: u64,
    pub rows_rejected: u64,
    /// Windows scored (for batch input, one per accepted line).
    pub scored: u64,
    pub alarms: u64,
    pub vehicles: u64,
    /// Feature columns as named in events and Parquet.
    pub feature_names: Vec<String>,
    /// The value that stands for a missing daily value in the features.
    pub fill_value: f64,
    pub partitioned: bool,
    pub seconds: f64,
}

impl Summary {
    /// Reads a `summary.json`; a missing, unreadable or malformed file is an error that
    /// names it (and, for bad JSON, the line and column).
    pub fn read(path: &Path) -> Result<Summary> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a bms summary", path.display()))
    }

    /// Writes `summary.json` text: pretty-printed, with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a summary serialises");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let s = Summary {
            input: "in.csv".into(),
            format: Some(InputFormat::Daily),
            model_id: "m".into(),
            threshold: 0.25,
            rows_read: 10,
            rows_rejected: 1,
            scored: 9,
            alarms: 2,
            vehicles: 3,
            feature_names: vec!["a_1".into()],
            fill_value: -1.0,
            partitioned: true,
            seconds: 0.5,
        };
        let p = dir.path().join("summary.json");
        std::fs::write(&p, s.to_json()).unwrap();
        assert_eq!(Summary::read(&p).unwrap(), s);

        let missing = dir.path().join("nope.json");
        let e = format!("{:#}", Summary::read(&missing).unwrap_err());
        assert!(e.contains("nope.json"), "{e}");

        std::fs::write(&p, "{\"input\": \"x\"}").unwrap();
        let e = format!("{:#}", Summary::read(&p).unwrap_err());
        assert!(
            e.contains("summary.json") && e.contains("missing field"),
            "{e}"
        );
    }
}
