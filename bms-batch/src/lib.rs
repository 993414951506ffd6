//! The batch scoring pipeline of `bms` and its durable stores, as a library: what
//! `bms predict` runs, and what the Python package (`bms.score_file`), the server and the
//! serverless and Spark integrations call so that every surface scores exactly alike.
//!
//! - [`score`]: an input file (reference batch CSV, a daily table or frames, CSV or
//!   Parquet; [`detect_format`]) scored with a [`Model`](bms_core::model::Model) under a
//!   [`Job`], predictions handed to a [`PredictionSink`], progress to an [`Observer`];
//!   returns the run's [`Summary`] after checking that every record was scored or
//!   rejected.
//! - Sinks ([`sink`]): [`CsvSink`] (what `bms predict` prints), and the stores of
//!   [`StoreDir`] — [`ParquetSink`] (plain or Hive-partitioned), [`EventsSink`]
//!   (`events.jsonl`) and [`SqliteSink`] (`results.sqlite`, upserted) — written under
//!   temporary names or in one open transaction and moved into place only when the whole
//!   input was read ([`PredictionSink::commit`]). A failed run changes nothing.
//! - [`store`]: the record ([`Prediction`]), its deterministic event id, and the stores'
//!   readers and incremental writers (`bms serve --store`).
//!
//! - [`codec`]: the request and response bodies of `bms serve` and the API Gateway
//!   handler (SageMaker's `/invocations` CSV/JSON, the reference gateway's `/v1/predict`).
//! - [`evaluate`]: scored files against labels (`bms evaluate`, `bms.evaluate`).
//!
//! The library prints nothing and reads no environment variables.
//!
//! ```no_run
//! use std::path::Path;
//! use bms_batch::{Job, NoObserver, StoreDir, score};
//! # fn main() -> anyhow::Result<()> {
//! let model = bms_core::model::Model::load(Path::new("models/consistency-ref14x6.onnx"))?;
//! let job = Job::default();
//! let sink = StoreDir::create(Path::new("out"), &model, &job)?;
//! let summary = score(Path::new("daily.csv"), &model, &job, Box::new(sink), &NoObserver)?;
//! println!("{} windows scored, {} alarms", summary.scored, summary.alarms);
//! # Ok(()) }
//! ```

pub mod codec;
pub mod evaluate;
pub mod input;
pub mod pipeline;
pub mod sink;
pub mod store;
pub mod summary;

pub use input::{FileKind, InputFormat, detect_format, ocv_curve};
pub use pipeline::{Job, NoObserver, Observer, ReadCounts, score, score_to_dir};
pub use sink::{
    CsvSink, EventsSink, ParquetSink, PredictionSink, RunEnd, ScoredChunk, SqliteSink, StoreDir,
};
pub use store::Prediction;
pub use summary::Summary;

/// An error and its causes as one line, `outer: inner: …`, leaving out a cause whose text
/// the line already holds: the core's errors include their source's message in their own
/// (so that every surface shows it) and keep the source as well (so that callers can
/// inspect it), which anyhow's `{:#}` would print twice.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_text_keeps_each_message_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let core = bms_core::BmsError::Io {
            path: "a.csv".into(),
            source: io,
        };
        let e = anyhow::Error::new(core).context("reading the input");
        assert_eq!(
            super::error_text(&e),
            "reading the input: a.csv: no such file"
        );
        assert_eq!(
            format!("{e:#}"),
            "reading the input: a.csv: no such file: no such file"
        );
    }
}
