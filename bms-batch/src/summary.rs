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
    /// Days ahead the model's label looks (its `bms.horizon_days`): what `bms evaluate`
    /// labels the windows with. Absent in summaries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon_days: Option<u32>,
    pub partitioned: bool,
    pub seconds: f64,
    /// Labelled input (batch lines ending with a label, as `bms windows --labels` writes
    /// them): how the scores compare with the labels. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
}

/// Scores against labels: ROC AUC over every labelled window, precision and recall of the
/// alarms at the run's threshold.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Windows with a label.
    pub labelled: u64,
    /// Of them, labelled 1.
    pub positives: u64,
    /// Area under the ROC curve (ties count one half); `None` when only one class occurs.
    pub roc_auc: Option<f64>,
    /// Average precision (scikit-learn's definition, `bms_core::evaluate`).
    #[serde(default)]
    pub average_precision: Option<f64>,
    /// Alarms that are labelled 1, of all alarms; `None` without alarms.
    pub precision: Option<f64>,
    /// Positives that raised an alarm, of all positives; `None` without positives.
    pub recall: Option<f64>,
    /// F1 at the threshold: 2·TP / (2·TP + FP + FN).
    #[serde(default)]
    pub f1: Option<f64>,
}

impl Evaluation {
    /// The evaluation of `(probability, label)` pairs (labels 0 or 1) at `threshold`, by
    /// [`bms_core::evaluate::window_metrics`].
    pub fn of(pairs: &[(f32, f32)], threshold: f32) -> Evaluation {
        let labelled: Vec<(f32, bool)> = pairs.iter().map(|&(p, y)| (p, y == 1.0)).collect();
        let m = bms_core::evaluate::window_metrics(&labelled, threshold);
        Evaluation {
            labelled: m.windows,
            positives: m.positives,
            roc_auc: m.roc_auc,
            average_precision: m.average_precision,
            precision: m.precision,
            recall: m.recall,
            f1: m.f1,
        }
    }
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
            horizon_days: Some(14),
            partitioned: true,
            seconds: 0.5,
            evaluation: Some(Evaluation::of(&[(0.9, 1.0), (0.2, 0.0)], 0.5)),
        };
        let p = dir.path().join("summary.json");
        std::fs::write(&p, s.to_json()).unwrap();
        assert_eq!(Summary::read(&p).unwrap(), s);

        let missing = dir.path().join("nope.json");
        let e = format!("{:#}", Summary::read(&missing).unwrap_err());
        assert!(e.contains("nope.json"), "{e}");

        // Without labels, no evaluation is written (summaries of unlabelled runs are as
        // before) and none is read.
        let plain = Summary {
            evaluation: None,
            ..s.clone()
        };
        std::fs::write(&p, plain.to_json()).unwrap();
        assert!(!plain.to_json().contains("evaluation"));
        assert_eq!(Summary::read(&p).unwrap(), plain);

        std::fs::write(&p, "{\"input\": \"x\"}").unwrap();
        let e = format!("{:#}", Summary::read(&p).unwrap_err());
        assert!(
            e.contains("summary.json") && e.contains("missing field"),
            "{e}"
        );
    }

    #[test]
    fn evaluation_counts_ties_as_halves_and_is_none_where_undefined() {
        // Scores 0.1 (neg), 0.4 (pos), 0.4 (neg), 0.8 (pos): of the 4 positive-negative
        // pairs, 3 are ordered right and 1 is a tie: AUC = 3.5 / 4.
        let pairs = [(0.1, 0.0), (0.4, 1.0), (0.4, 0.0), (0.8, 1.0)];
        let e = Evaluation::of(&pairs, 0.4);
        assert_eq!(e.labelled, 4);
        assert_eq!(e.positives, 2);
        assert_eq!(e.roc_auc, Some(0.875));
        // Alarms at ≥ 0.4: three, two of them positive; both positives alarmed.
        assert_eq!(e.precision, Some(2.0 / 3.0));
        assert_eq!(e.recall, Some(1.0));
        let e = Evaluation::of(&pairs, 0.9);
        assert_eq!((e.precision, e.recall), (None, Some(0.0)));
        let one_class = Evaluation::of(&[(0.3, 0.0), (0.6, 0.0)], 0.5);
        assert_eq!((one_class.roc_auc, one_class.recall), (None, None));
        assert_eq!(one_class.precision, Some(0.0));
        // Perfectly ranked, and reversed.
        let ranked = [(0.1, 0.0), (0.2, 0.0), (0.7, 1.0)];
        assert_eq!(Evaluation::of(&ranked, 0.5).roc_auc, Some(1.0));
        let reversed = [(0.9, 0.0), (0.2, 1.0)];
        assert_eq!(Evaluation::of(&reversed, 0.5).roc_auc, Some(0.0));
    }
}
