//! `--store DIR`: every keyed prediction recorded in the stores `bms predict --out` writes
//! (`results.sqlite` upserted by event id, `events.jsonl` appended), off the scoring path.
//!
//! Handlers hand their predictions to one writer thread over a channel. The writer takes
//! everything queued while it was busy as one batch (one SQLite transaction and one fsynced
//! JSONL append), so batches grow with load. [`Recorder::record_acked`] gives the handler
//! a receiver that resolves once its predictions are committed, or with the error that
//! kept them out: `bms serve` answers 200 only after that, so an acknowledged prediction
//! is never lost (a full disk turns into 503s, not into 200s whose rows are missing).
//! While the last write failed, [`Recorder::health`] says why (`/ping` answers 503). The
//! queue is bounded in rows: past `max_queued` a scoring request is refused with 503
//! before it is scored, never queued without bound. [`Recorder::finish`] (after the server
//! drained) closes the channel and waits until the writer has written everything.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use bms_core::WindowSpec;

use super::metrics::Metrics;
use bms_batch::store::{Prediction, Store, event_field_names};

/// Rows written per transaction at most (a request's rows are never split).
const MAX_BATCH: usize = 8192;

/// Tries of one batch before its requests are told it was not stored.
const ATTEMPTS: u32 = 3;

/// The outcome of one request's write: `Err` names why it was not stored.
pub type Committed = tokio::sync::oneshot::Receiver<Result<(), String>>;

struct Job {
    preds: Vec<Prediction>,
    done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

pub struct Recorder {
    /// The command whose log lines these are.
    who: &'static str,
    tx: Mutex<Option<Sender<Job>>>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    /// The error of the last write when it failed; `None` after a successful one.
    failing: Arc<Mutex<Option<String>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Recorder {
    /// Opens (or creates) the stores in `dir` and starts the writer.
    /// `who` prefixes its log lines (`bms serve`, `bms gateway`).
    pub fn start(
        who: &'static str,
        dir: &Path,
        spec: &WindowSpec,
        metrics: Arc<Metrics>,
        max_queued: usize,
    ) -> Result<Self> {
        let store = Store::open(dir, event_field_names(spec))
            .with_context(|| format!("--store {}", dir.display()))?;
        let (tx, rx) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let failing = Arc::new(Mutex::new(None));
        let f = failing.clone();
        let writer = std::thread::Builder::new()
            .name("bms-store".into())
            .spawn(move || write_loop(who, store, rx, q, f, metrics))
            .context("cannot start the store writer")?;
        Ok(Recorder {
            who,
            tx: Mutex::new(Some(tx)),
            queued,
            max_queued,
            failing,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Why the store cannot write, when its last write failed.
    pub fn health(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether another request's predictions may be queued.
    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::Relaxed) < self.max_queued
    }

    /// Queues predictions for writing, without waiting for the outcome (the gateway,
    /// whose journal already holds the frames they came from). After
    /// [`Recorder::finish`] this is an error.
    pub fn record(&self, preds: Vec<Prediction>) -> Result<(), &'static str> {
        self.send(preds, None)
    }

    /// Queues predictions for writing; the receiver resolves when they are committed or
    /// could not be. Nothing to write resolves at once.
    pub fn record_acked(&self, preds: Vec<Prediction>) -> Result<Committed, &'static str> {
        let (done, committed) = tokio::sync::oneshot::channel();
        if preds.is_empty() {
            let _ = done.send(Ok(()));
        } else {
            self.send(preds, Some(done))?;
        }
        Ok(committed)
    }

    fn send(
        &self,
        preds: Vec<Prediction>,
        done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), &'static str> {
        if preds.is_empty() {
            return Ok(());
        }
        let n = preds.len();
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return Err("the store is closed");
        };
        self.queued.fetch_add(n, Ordering::Relaxed);
        tx.send(Job { preds, done }).map_err(|_| {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            "the store writer stopped"
        })
    }

    /// Closes the queue and waits until everything queued is written.
    pub fn finish(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take()
            && w.join().is_err()
        {
            eprintln!("{}: the store writer panicked", self.who);
        }
    }
}

fn write_loop(
    who: &str,
    mut store: Store,
    rx: Receiver<Job>,
    queued: Arc<AtomicUsize>,
    failing: Arc<Mutex<Option<String>>>,
    metrics: Arc<Metrics>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut rows = jobs[0].preds.len();
        while rows < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => {
                    rows += more.preds.len();
                    jobs.push(more);
                }
                Err(_) => break,
            }
        }
        let batch: Vec<Prediction> = jobs.iter_mut().flat_map(|j| j.preds.drain(..)).collect();
        let mut attempt = 0;
        let outcome = loop {
            match store.write_batch(&batch) {
                Ok(()) => {
                    metrics.add_stored(batch.len());
                    break Ok(());
                }
                Err(e) => {
                    metrics.add_store_error();
                    attempt += 1;
                    // Waiting handlers hold their answers meanwhile: retry briefly only.
                    if attempt >= ATTEMPTS {
                        let why = format!("{e:#}");
                        eprintln!(
                            "{who}: store write failed {attempt} times, {} predictions not stored: {why}",
                            batch.len()
                        );
                        break Err(why);
                    }
                    eprintln!("{who}: store write failed (retrying): {e:#}");
                    std::thread::sleep(Duration::from_millis(50 << attempt));
                }
            }
        };
        *failing.lock().unwrap_or_else(|p| p.into_inner()) = outcome.as_ref().err().cloned();
        for job in jobs {
            if let Some(done) = job.done {
                let _ = done.send(outcome.clone());
            }
        }
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
    }
}
