//! Scenario 1: an object lands in a bucket, its ObjectCreated event invokes the function,
//! and the function scores the object with the same pipeline as `bms predict`
//! ([`bms_batch::score`]), then writes the results:
//!
//! | where | what |
//! |---|---|
//! | `{prefix}predictions/date=D/{run}.parquet` | the Hive-partitioned Parquet copy (Athena, DuckDB, Spark) |
//! | `{prefix}events/{run}.jsonl` | the reference's stored-event JSON, one line per prediction |
//! | `{prefix}rejects/{run}.csv` | records set aside (`line,reason,source`) |
//! | `{prefix}summaries/{run}.json` | the run's summary (`bms report` reads it) |
//! | the table | one item per prediction ([`crate::table`]) |
//! | `{prefix}runs/{object}.{model}/_SUCCESS` | the manifest, written last: the run's objects, the input's ETag and counts |
//!
//! `{run}` is `{object}.{model}.{etag}`: the input key (every byte other than
//! `A–Z a–z 0–9 . -` as `_XX`, [`name_segment`]), the model id and the object's ETag. Names are
//! deterministic, so a repeated delivery of the same event rewrites the same objects and
//! the same items and adds nothing. S3 has no rename: a run uploads its objects, writes
//! the items, deletes the items of an earlier version of the same object that this one no
//! longer predicts (their keys read from the earlier run's events object), and commits by
//! writing the manifest; only then are the objects of the run the previous manifest named
//! (the earlier version) and not this one deleted. A run that fails deletes what it
//! uploaded (except objects the committed manifest names), so it leaves no committed
//! partial output, and the function returns an error so that the platform delivers the
//! event again.
//!
//! Bad input is not retried: an object that is not a table or batch CSV the pipeline can
//! read, or a key that does not decode, is reported as `failed` in the function's result
//! (and logged) with nothing written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use bms_batch::store::{
    EVENT_ID_FIELD, EVENTS_FILE, PARQUET_DIR, Prediction, REJECTS_FILE, SUMMARY_FILE,
};
use bms_batch::{Job, NoObserver, PredictionSink, RunEnd, ScoredChunk, StoreDir, Summary};
use bms_core::model::Model;
use object_store::ObjectStore;
use serde_json::{Value, json};

use crate::objects::{self, Buckets, S3Url, decode_event_key};
use crate::table::{KeyValueTable, Retry, WriteStats, delete_all, prediction_item, put_all};

/// Everything the bucket handler needs, built once per cold start.
pub struct BucketHandler {
    pub model: Arc<Model>,
    /// How objects are scored; `partition_by_date` is always set.
    pub job: Job,
    pub buckets: Buckets,
    /// The results table; `None` writes objects only.
    pub table: Option<Arc<dyn KeyValueTable>>,
    pub retry: Retry,
    /// Key prefix of every result object (`results/` by default); objects that land under
    /// it in the output bucket are not scored (the function's own outputs).
    pub results_prefix: String,
    /// Where results go; the input's bucket when `None`.
    pub output_bucket: Option<String>,
}

/// The outcome of one object of an event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ObjectOutcome {
    /// `s3://bucket/key` (the key decoded), or the raw key when it does not decode.
    pub object: String,
    /// `scored`, `skipped` or `failed` (bad input, not retried).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<WriteStats>,
    /// The committed result objects, manifest last.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

/// The object records of an event: S3 notification records, the same wrapped in SQS
/// messages (a queue between bucket and function), or an `s3:TestEvent` (none).
/// Returns `(bucket, raw key, etag)` per ObjectCreated record.
pub fn object_records(event: &Value) -> Result<Vec<(String, String, Option<String>)>> {
    let mut out = Vec::new();
    collect_records(event, &mut out, 0)?;
    Ok(out)
}

fn collect_records(
    event: &Value,
    out: &mut Vec<(String, String, Option<String>)>,
    depth: u32,
) -> Result<()> {
    if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(());
    }
    let records = event
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the event has no Records array (not an S3 or SQS event)"))?;
    for (i, r) in records.iter().enumerate() {
        let source = r
            .get("eventSource")
            .or_else(|| r.get("EventSource"))
            .and_then(Value::as_str);
        if source == Some("aws:sqs") {
            anyhow::ensure!(
                depth == 0,
                "Records[{i}]: an SQS message inside an SQS message"
            );
            let body = r
                .get("body")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("Records[{i}]: an SQS record without a string body"))?;
            let inner: Value = serde_json::from_str(body)
                .with_context(|| format!("Records[{i}]: the SQS message body is not JSON"))?;
            collect_records(&inner, out, depth + 1)
                .with_context(|| format!("Records[{i}] (SQS message body)"))?;
            continue;
        }
        let name = r.get("eventName").and_then(Value::as_str).unwrap_or("");
        if !name.is_empty() && !name.starts_with("ObjectCreated") {
            continue;
        }
        let s3 = r
            .get("s3")
            .ok_or_else(|| anyhow!("Records[{i}] has no s3 member"))?;
        let bucket = s3
            .pointer("/bucket/name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("Records[{i}] has no s3.bucket.name"))?;
        let key = s3
            .pointer("/object/key")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("Records[{i}] has no s3.object.key"))?;
        let etag = s3
            .pointer("/object/eTag")
            .and_then(Value::as_str)
            .map(|t| t.trim_matches('"').to_owned());
        out.push((bucket.to_owned(), key.to_owned(), etag));
    }
    Ok(())
}

/// `text` with every byte other than `A–Z a–z 0–9 . -` written as `_XX` (hex): a key as
/// one segment of an object name, without the characters S3 advises against (`%`…) and
/// without collisions (`_` itself is `_5F`).
pub fn name_segment(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-') {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("_{b:02X}"));
        }
    }
    s
}

/// A sink that passes everything to a [`StoreDir`] and keeps the predictions (for the
/// table's items).
struct Keep<'a> {
    inner: StoreDir,
    kept: &'a mut Vec<Arc<Vec<Prediction>>>,
}

impl PredictionSink for Keep<'_> {
    fn wants_events(&self) -> bool {
        self.inner.wants_events()
    }
    fn write(&mut self, chunk: ScoredChunk) -> Result<()> {
        self.kept.push(chunk.predictions.clone());
        self.inner.write(chunk)
    }
    fn commit(self: Box<Self>, end: &RunEnd) -> Result<()> {
        Box::new(self.inner).commit(end)
    }
}

/// An error of one object: bad input (reported, not retried) or a failure of the
/// services (the whole invocation fails and is delivered again).
enum Failure {
    Input(anyhow::Error),
    Service(anyhow::Error),
}

impl BucketHandler {
    /// Handles an event: every object record in order. Bad input is reported in the
    /// result (`{"objects": [...]}`); a failure of S3 or the table is an error, after the
    /// objects before it were committed (they are rewritten identically on redelivery).
    pub async fn handle(&self, event: &Value) -> Result<Value> {
        let records = object_records(event)?;
        let mut outcomes = Vec::with_capacity(records.len());
        for (bucket, raw_key, etag) in records {
            let outcome = self.handle_object(&bucket, &raw_key, etag).await?;
            match outcome.status {
                "failed" => eprintln!(
                    "bms: {}: not scored: {}",
                    outcome.object,
                    outcome.reason.as_deref().unwrap_or("")
                ),
                "skipped" => eprintln!(
                    "bms: {}: skipped: {}",
                    outcome.object,
                    outcome.reason.as_deref().unwrap_or("")
                ),
                _ => {
                    let s = outcome.summary.as_ref();
                    eprintln!(
                        "bms: {}: {} windows scored, {} alarms, {} rejected; {} items",
                        outcome.object,
                        s.map_or(0, |s| s.scored),
                        s.map_or(0, |s| s.alarms),
                        s.map_or(0, |s| s.rows_rejected),
                        outcome.items.map_or(0, |w| w.items),
                    );
                }
            }
            outcomes.push(outcome);
        }
        Ok(json!({ "objects": outcomes }))
    }

    /// One object of an event (its key as the event gives it, form-URL-encoded).
    pub async fn handle_object(
        &self,
        bucket: &str,
        raw_key: &str,
        etag: Option<String>,
    ) -> Result<ObjectOutcome> {
        let fail = |object: String, reason: String| ObjectOutcome {
            object,
            status: "failed",
            reason: Some(reason),
            summary: None,
            items: None,
            outputs: Vec::new(),
        };
        let key = match decode_event_key(raw_key) {
            Ok(k) => k,
            Err(e) => return Ok(fail(format!("s3://{bucket}/{raw_key}"), format!("{e:#}"))),
        };
        let input = S3Url {
            bucket: bucket.to_owned(),
            key,
        };
        let out_bucket = self.output_bucket.as_deref().unwrap_or(bucket);
        if out_bucket == bucket && input.key.starts_with(&self.results_prefix) {
            return Ok(ObjectOutcome {
                status: "skipped",
                reason: Some(format!(
                    "under the results prefix {:?} (an output of this function)",
                    self.results_prefix
                )),
                ..fail(input.to_string(), String::new())
            });
        }
        match self.score_object(&input, out_bucket, etag).await {
            Ok(o) => Ok(o),
            Err(Failure::Input(e)) => Ok(fail(input.to_string(), bms_batch::error_text(&e))),
            Err(Failure::Service(e)) => Err(e.context(format!("scoring {input}"))),
        }
    }

    async fn score_object(
        &self,
        input: &S3Url,
        out_bucket: &str,
        etag: Option<String>,
    ) -> Result<ObjectOutcome, Failure> {
        let service = Failure::Service;
        let src = self.buckets.get(&input.bucket).map_err(service)?;
        let out_store = self.buckets.get(out_bucket).map_err(service)?;
        let tmp = tempfile::Builder::new()
            .prefix("bms-")
            .tempdir()
            .context("cannot create a temporary directory")
            .map_err(service)?;
        let local = tmp.path().join(local_name(&input.key));
        let got = match objects::download(src.as_ref(), input, &local).await {
            Ok(got) => got,
            Err(e) if is_not_found(&e) => {
                return Err(Failure::Input(anyhow!(
                    "{input} no longer exists (deleted after the event was sent)"
                )));
            }
            Err(e) => return Err(service(e)),
        };
        let etag = got.e_tag.or(etag).unwrap_or_else(|| "none".to_owned());
        let model_id = self.model.contract().model_id.clone();
        let base = format!("{}.{}", name_segment(&input.key), name_segment(&model_id));
        let run = format!("{base}.{}", name_segment(&etag));

        // Score on the blocking pool: the pipeline uses every core of its own.
        let out_dir = tmp.path().join("out");
        let (summary, kept) = {
            let model = self.model.clone();
            let job = Job {
                partition_by_date: true,
                ..self.job.clone()
            };
            let local = local.clone();
            let out_dir = out_dir.clone();
            tokio::task::spawn_blocking(move || -> Result<(Summary, Vec<Arc<Vec<Prediction>>>)> {
                let (format, _) = (bms_batch::detect_format(&local)?, ());
                let job = Job {
                    format: Some(format),
                    ..job
                };
                let mut kept = Vec::new();
                let sink = Keep {
                    inner: StoreDir::create(&out_dir, &model, &job)?,
                    kept: &mut kept,
                };
                let summary = bms_batch::score(&local, &model, &job, Box::new(sink), &NoObserver)?;
                Ok((summary, kept))
            })
            .await
            .context("the scoring task failed")
            .map_err(service)?
            .map_err(Failure::Input)?
        };
        if summary.scored == 0
            && summary.rows_read > 0
            && summary.rows_rejected == summary.rows_read
        {
            let first = std::fs::read_to_string(out_dir.join(REJECTS_FILE))
                .ok()
                .and_then(|t| t.lines().nth(1).map(|l| l.escape_debug().to_string()))
                .unwrap_or_default();
            return Err(Failure::Input(anyhow!(
                "{input}: none of its {} {} could be read, so it is not scored \
                 (the first, as line,reason,source: {first})",
                summary.rows_read,
                summary.format.map_or("records", |f| f.records()),
            )));
        }
        let mut summary = summary;
        summary.input = input.to_string();
        std::fs::write(out_dir.join(SUMMARY_FILE), summary.to_json())
            .context("cannot rewrite summary.json")
            .map_err(service)?;

        // The run's objects: (local file, object).
        let url = |key: String| S3Url {
            bucket: out_bucket.to_owned(),
            key: format!("{}{key}", self.results_prefix),
        };
        let mut files: Vec<(PathBuf, S3Url)> = Vec::new();
        for (date_dir, file) in partitions(&out_dir.join(PARQUET_DIR)).map_err(service)? {
            files.push((file, url(format!("predictions/{date_dir}/{run}.parquet"))));
        }
        files.push((
            out_dir.join(EVENTS_FILE),
            url(format!("events/{run}.jsonl")),
        ));
        files.push((
            out_dir.join(REJECTS_FILE),
            url(format!("rejects/{run}.csv")),
        ));
        files.push((
            out_dir.join(SUMMARY_FILE),
            url(format!("summaries/{run}.json")),
        ));
        let manifest_url = url(format!("runs/{base}/_SUCCESS"));

        let previous = read_manifest(out_store.as_ref(), &manifest_url)
            .await
            .map_err(service)?;
        let mut uploaded: Vec<S3Url> = Vec::new();
        let result = self
            .commit(
                &out_store,
                &files,
                &mut uploaded,
                &kept,
                &summary,
                input,
                &etag,
                &manifest_url,
                &previous,
            )
            .await;
        let items = match result {
            Ok(items) => items,
            Err(e) => {
                // Leave no partial output: what this attempt uploaded goes, except the
                // objects the committed manifest names (a repeat rewrote them identically).
                for u in &uploaded {
                    if !previous.contains(&u.to_string()) {
                        let _ = objects::delete(out_store.as_ref(), u).await;
                    }
                }
                return Err(service(e));
            }
        };
        let mut outputs: Vec<String> = files.iter().map(|(_, u)| u.to_string()).collect();
        outputs.push(manifest_url.to_string());
        for old in &previous {
            if !outputs.contains(old)
                && let Ok(u) = S3Url::parse(old)
                && let Err(e) = objects::delete(out_store.as_ref(), &u).await
            {
                eprintln!("bms: cannot delete {old}, of an earlier version of {input}: {e:#}");
            }
        }
        Ok(ObjectOutcome {
            object: input.to_string(),
            status: "scored",
            reason: None,
            summary: Some(summary),
            items,
            outputs,
        })
    }

    /// Uploads the run's objects, writes the items, then the manifest.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &self,
        store: &Arc<dyn ObjectStore>,
        files: &[(PathBuf, S3Url)],
        uploaded: &mut Vec<S3Url>,
        kept: &[Arc<Vec<Prediction>>],
        summary: &Summary,
        input: &S3Url,
        etag: &str,
        manifest: &S3Url,
        previous: &[String],
    ) -> Result<Option<WriteStats>> {
        use futures_util::stream::{self, StreamExt, TryStreamExt};

        // Every object counts as uploaded before its upload starts, so that a failure
        // cleans up whatever reached the bucket. Objects go up 8 at a time (a
        // date-partitioned run has one per date) while the items are written.
        uploaded.extend(files.iter().map(|(_, u)| u.clone()));
        let uploads = stream::iter(files)
            .map(|(file, u)| objects::upload(store.clone(), file, u))
            .buffer_unordered(8)
            .try_collect::<Vec<u64>>();
        let items = async {
            match &self.table {
                Some(table) => {
                    let source = input.to_string();
                    let items: Vec<_> = kept
                        .iter()
                        .flat_map(|c| c.iter())
                        .map(|p| prediction_item(p, &summary.feature_names, &source))
                        .collect();
                    Ok(Some(put_all(table.as_ref(), items, self.retry).await?))
                }
                None => Ok(None),
            }
        };
        let (_, items) = futures_util::future::try_join(uploads, items).await?;
        if let Some(table) = &self.table {
            self.delete_stale_items(table.as_ref(), store.as_ref(), files, kept, previous)
                .await?;
        }
        let body = json!({
            "input": input.to_string(),
            "etag": etag,
            "model_id": summary.model_id,
            "scored": summary.scored,
            "alarms": summary.alarms,
            "rows_rejected": summary.rows_rejected,
            "items": items.map(|w| w.items),
            "objects": files.iter().map(|(_, u)| u.to_string()).collect::<Vec<_>>(),
        });
        let mut text = serde_json::to_string_pretty(&body).expect("JSON of plain values");
        text.push('\n');
        objects::put(store.as_ref(), manifest, text.into_bytes()).await?;
        Ok(items)
    }
}

impl BucketHandler {
    /// The items of an earlier version of the object that this run no longer predicts
    /// (a vehicle or day gone from the new version): their keys are read from the earlier
    /// run's events object, which its manifest names, and the items deleted before the
    /// new manifest commits, so that a failure here is retried with the old manifest.
    async fn delete_stale_items(
        &self,
        table: &dyn KeyValueTable,
        store: &dyn ObjectStore,
        files: &[(PathBuf, S3Url)],
        kept: &[Arc<Vec<Prediction>>],
        previous: &[String],
    ) -> Result<()> {
        let events_dir = format!("{}events/", self.results_prefix);
        let Some(old_events) = previous.iter().find(|o| {
            S3Url::parse(o).is_ok_and(|u| u.key.starts_with(&events_dir))
                && !files.iter().any(|(_, u)| u.to_string() == **o)
        }) else {
            return Ok(());
        };
        let url = S3Url::parse(old_events)?;
        let Some(bytes) = objects::get_if_exists(store, &url).await? else {
            return Ok(());
        };
        let now: std::collections::HashSet<&str> = kept
            .iter()
            .flat_map(|c| c.iter())
            .map(|p| p.event_id.as_str())
            .collect();
        let mut stale = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = serde_json::from_slice(line)
                .with_context(|| format!("{url}, line {}: not JSON", i + 1))?;
            let Some(id) = v.get(EVENT_ID_FIELD).and_then(Value::as_str) else {
                bail!("{url}, line {}: no {EVENT_ID_FIELD}", i + 1);
            };
            if !now.contains(id) {
                stale.push(id.to_owned());
            }
        }
        if !stale.is_empty() {
            let n = stale.len();
            delete_all(table, stale, self.retry).await?;
            eprintln!("bms: {n} items of an earlier version of the object deleted");
        }
        Ok(())
    }
}

/// The objects a committed manifest names (none when there is no manifest).
async fn read_manifest(store: &dyn ObjectStore, url: &S3Url) -> Result<Vec<String>> {
    let Some(bytes) = objects::get_if_exists(store, url).await? else {
        return Ok(Vec::new());
    };
    let v: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{url} is not a JSON manifest"))?;
    Ok(v.get("objects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

/// `(date=D, file)` of each partition of a partitioned Parquet directory, by date.
fn partitions(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("date=") {
            continue;
        }
        for f in std::fs::read_dir(entry.path())? {
            let f = f?;
            if f.path().extension().is_some_and(|e| e == "parquet") {
                out.push((name.clone(), f.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The local file name of a downloaded key: its last segment (the pipeline tells the
/// format from the extension and the content).
fn local_name(key: &str) -> String {
    let last = key.rsplit('/').next().unwrap_or("");
    let safe: String = last
        .chars()
        .map(|c| if c == '\0' { '_' } else { c })
        .collect();
    if safe.is_empty() || safe == "." || safe == ".." || safe == "out" {
        "input".to_owned()
    } else {
        safe
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<object_store::Error>()
            .is_some_and(|e| matches!(e, object_store::Error::NotFound { .. }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_s3_sqs_and_test_events() {
        let s3 = json!({"Records": [
            {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
             "s3": {"bucket": {"name": "b"}, "object": {"key": "in/a+b.csv", "eTag": "\"e1\""}}},
            {"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
             "s3": {"bucket": {"name": "b"}, "object": {"key": "gone.csv"}}}
        ]});
        assert_eq!(
            object_records(&s3).unwrap(),
            vec![("b".into(), "in/a+b.csv".into(), Some("e1".into()))]
        );
        let sqs = json!({"Records": [
            {"eventSource": "aws:sqs", "body": serde_json::to_string(&s3).unwrap()},
            {"eventSource": "aws:sqs", "body": "{\"Service\":\"Amazon S3\",\"Event\":\"s3:TestEvent\"}"}
        ]});
        assert_eq!(object_records(&sqs).unwrap().len(), 1);
        let e = object_records(&json!({"hello": 1})).unwrap_err();
        assert!(e.to_string().contains("no Records"), "{e}");
        let e = object_records(&json!({"Records": [{"s3": {"bucket": {}}}]})).unwrap_err();
        assert!(
            e.to_string().contains("Records[0] has no s3.bucket.name"),
            "{e}"
        );
    }

    #[test]
    fn names_are_one_segment_and_local_names_safe() {
        assert_eq!(name_segment("in/fleet 1.csv"), "in_2Ffleet_201.csv");
        assert_eq!(name_segment("m-1_a.b"), "m-1_5Fa.b");
        assert_eq!(local_name("in/daily.csv"), "daily.csv");
        assert_eq!(local_name("in/"), "input");
        assert_eq!(local_name(".."), "input");
    }
}
