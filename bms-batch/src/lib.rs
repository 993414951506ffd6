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
