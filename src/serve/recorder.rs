//! `--store DIR`: every keyed prediction recorded in the stores `bms predict --out` writes
//! (`results.sqlite` upserted by event id, `events.jsonl` appended), off the request path.
//!
//! Handlers hand their predictions to one writer thread over a channel and answer without
//! waiting. The writer takes everything queued while it was busy as one batch (one SQLite
//! transaction and one fsynced JSONL append), so batches grow with load. The queue is
//! bounded in rows: past `max_queued` a scoring request is refused with 503 before it is
//! scored, never queued without bound. [`Recorder::finish`] (after the server drained)
//! closes the channel and waits until the writer has written everything.

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

/// Rows written per transaction at most.
const MAX_BATCH: usize = 8192;

pub struct Recorder {
    /// The command whose log lines these are.
    who: &'static str,
    tx: Mutex<Option<Sender<Vec<Prediction>>>>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
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
        let writer = std::thread::Builder::new()
            .name("bms-store".into())
            .spawn(move || write_loop(who, store, rx, q, metrics))
            .context("cannot start the store writer")?;
        Ok(Recorder {
            who,
            tx: Mutex::new(Some(tx)),
            queued,
            max_queued,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Whether another request's predictions may be queued.
    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::Relaxed) < self.max_queued
    }

    /// Queues predictions for writing. After [`Recorder::finish`] this is an error.
    pub fn record(&self, preds: Vec<Prediction>) -> Result<(), &'static str> {
        if preds.is_empty() {
            return Ok(());
        }
        let n = preds.len();
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return Err("the store is closed");
        };
        self.queued.fetch_add(n, Ordering::Relaxed);
        tx.send(preds).map_err(|_| {
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
    rx: Receiver<Vec<Prediction>>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
) {
    while let Ok(mut batch) = rx.recv() {
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let mut attempt = 0;
        loop {
            match store.write_batch(&batch) {
                Ok(()) => {
                    metrics.add_stored(batch.len());
                    break;
                }
                Err(e) => {
                    metrics.add_store_error();
                    attempt += 1;
                    if attempt >= 5 {
                        eprintln!(
                            "{who}: store write failed {attempt} times, {} predictions not stored: {e:#}",
                            batch.len()
                        );
                        break;
                    }
                    eprintln!("{who}: store write failed (retrying): {e:#}");
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                }
            }
        }
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
    }
}
