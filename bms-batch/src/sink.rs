//! Where scored predictions go: [`PredictionSink`] and the stores that implement it.
//!
//! | sink | writes | commit |
//! |---|---|---|
//! | [`CsvSink`] | `vin,date,predicted_prob,alarm` lines to any writer (`bms predict` on stdout) | flush |
//! | [`ParquetSink`] | `predictions.parquet`, or `predictions/date=…/part-0.parquet` partitioned | footers written and synced, renamed into place (replacing either layout) |
//! | [`EventsSink`] | `events.jsonl` (the reference's stored-event JSON) | synced, renamed into place |
//! | [`SqliteSink`] | `results.sqlite`, upserted by event id inside one transaction | the transaction commits |
//! | [`StoreDir`] | all three (each on a thread of its own) plus `rejects.csv` and `summary.json` | the three in parallel, then rejects, then the summary |
//!
//! Until [`PredictionSink::commit`], nothing a reader can see changes: files are written
//! under temporary names and rows inside an open transaction. A sink dropped
//! uncommitted (the run failed) removes its temporary files and rolls back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bms_core::io::{AtomicFile, Reject, check_output_dir, check_output_file, push_text};
use bms_core::model::Model;

use crate::pipeline::Job;
use crate::store::bulk::BulkWriter;
use crate::store::parquet::PredictionsParquet;
use crate::store::sqlite::upsert_rows;
use crate::store::{
    EVENTS_FILE, EventKeys, PARQUET_DIR, PARQUET_FILE, Prediction, REJECTS_FILE, SQLITE_FILE,
    SUMMARY_FILE, SqliteStore, event_field_names, push_iso_date, write_event_json,
};
use crate::summary::Summary;

/// One chunk of predictions, in input order. The predictions are shared by the sinks that
/// write them; the events text goes to the one that wants it and is freed once written.
#[derive(Debug, Clone, Default)]
pub struct ScoredChunk {
    pub predictions: Arc<Vec<Prediction>>,
    /// When the sink [wants events](PredictionSink::wants_events): the stored-event JSON
    /// lines of `predictions` (each ending in `\n`), in order, in pieces (one per part
    /// scored on a core). Empty otherwise.
    pub events: Vec<String>,
}

/// What a sink learns when the run is over and every record is accounted for.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// Records set aside, in input order, with their line (or row) numbers.
    pub rejects: Arc<[Reject]>,
    /// The text of each rejected line (empty where it cannot be read back, e.g. Parquet).
    pub sources: Arc<[String]>,
    /// The run's summary (its `seconds` as of the start of the commit).
    pub summary: Summary,
    /// When the run started.
    pub started: Instant,
}

/// Where scored chunks go. [`crate::score`] calls [`PredictionSink::write`] for each
/// chunk in input order and [`PredictionSink::commit`] once, after the whole input was
/// read; a sink dropped without the commit must leave what readers see unchanged.
pub trait PredictionSink {
    /// Whether chunks should carry their events JSON ([`ScoredChunk::events`]); it is
    /// then written on the cores that score, in parallel.
    fn wants_events(&self) -> bool {
        false
    }
    /// Takes one chunk.
    fn write(&mut self, chunk: ScoredChunk) -> Result<()>;
    /// Makes everything written durable, not yet visible: a multi-store sink prepares
    /// every store before it commits any, so that a failure (a full disk) leaves all of
    /// them as they were. The default does nothing.
    fn prepare(&mut self, _end: &RunEnd) -> Result<()> {
        Ok(())
    }
    /// Makes everything written durable and visible.
    fn commit(self: Box<Self>, end: &RunEnd) -> Result<()>;
}

/// Predictions as `vin,date,predicted_prob,alarm` CSV (the header first), VINs quoted as
/// in every CSV of this project, probabilities as the shortest text that reads back to
/// the same `f32`.
pub struct CsvSink<W: Write> {
    out: W,
    buf: String,
}

impl<W: Write> CsvSink<W> {
    /// Writes the header line to `out`.
    pub fn new(mut out: W) -> Result<Self> {
        out.write_all(b"vin,date,predicted_prob,alarm\n")
            .context("writing the predictions CSV")?;
        Ok(CsvSink {
            out,
            buf: String::new(),
        })
    }
}

impl<W: Write> PredictionSink for CsvSink<W> {
    fn write(&mut self, chunk: ScoredChunk) -> Result<()> {
        use std::fmt::Write as _;
        self.buf.clear();
        for p in chunk.predictions.iter() {
            push_text(&mut self.buf, &p.vin);
            self.buf.push(',');
            push_iso_date(&mut self.buf, p.date);
            write!(self.buf, ",{:?},", p.predicted_prob).expect("writing to a String");
            self.buf.push(if p.alarm { '1' } else { '0' });
            self.buf.push('\n');
        }
        self.out
            .write_all(self.buf.as_bytes())
            .context("writing the predictions CSV")
    }

    fn commit(mut self: Box<Self>, _end: &RunEnd) -> Result<()> {
        self.out.flush().context("writing the predictions CSV")
    }
}

/// `predictions.parquet` (or the Hive-partitioned `predictions/`) of a directory.
pub struct ParquetSink {
    dir: PathBuf,
    writer: PredictionsParquet,
}

impl ParquetSink {
    /// Starts writing into `dir` (which must exist); `names` are the feature columns.
    pub fn create(dir: &Path, names: Vec<String>, partition_by_date: bool) -> Result<Self> {
        Ok(ParquetSink {
            dir: dir.to_path_buf(),
            writer: PredictionsParquet::create(dir, names, partition_by_date)?,
        })
    }
}

impl PredictionSink for ParquetSink {
    fn write(&mut self, chunk: ScoredChunk) -> Result<()> {
        self.writer.write(&chunk.predictions)
    }

    fn prepare(&mut self, _end: &RunEnd) -> Result<()> {
        self.writer.prepare()
    }

    fn commit(self: Box<Self>, _end: &RunEnd) -> Result<()> {
        self.writer.finish()?;
        readable(&self.dir.join(PARQUET_FILE));
        Ok(())
    }
}

/// A write-once `events.jsonl`, written under a temporary name (bypassing the page cache
/// where possible, see [`BulkWriter`]) and renamed into place on commit.
pub struct EventsSink {
    file: AtomicFile,
    /// `None` once its last block is out ([`PredictionSink::prepare`]).
    writer: Option<BulkWriter>,
    keys: EventKeys,
    target: PathBuf,
    buf: String,
}

impl EventsSink {
    /// Starts `path`; `names` are the feature keys ([`event_field_names`]).
    pub fn create(path: &Path, names: &[String]) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        let writer = BulkWriter::open(file.path(), true)
            .with_context(|| format!("writing {} ({})", path.display(), file.path().display()))?;
        Ok(EventsSink {
            file,
            writer: Some(writer),
            keys: EventKeys::new(names),
            target: path.to_path_buf(),
            buf: String::new(),
        })
    }

    fn context(&self) -> String {
        format!(
            "writing {} ({})",
            self.target.display(),
            self.file.path().display()
        )
    }
}

impl PredictionSink for EventsSink {
    fn wants_events(&self) -> bool {
        true
    }

    fn write(&mut self, chunk: ScoredChunk) -> Result<()> {
        let writer = self.writer.as_mut().context("events.jsonl is closed")?;
        let result = if chunk.events.is_empty() && !chunk.predictions.is_empty() {
            // Handed a chunk without its events: write them here.
            self.buf.clear();
            for p in chunk.predictions.iter() {
                write_event_json(&mut self.buf, p, &self.keys);
                self.buf.push('\n');
            }
            writer.write_all(self.buf.as_bytes())
        } else {
            chunk
                .events
                .iter()
                .try_for_each(|part| writer.write_all(part.as_bytes()))
        };
        // The message is formatted only for an error, not for every chunk.
        result.with_context(|| self.context())
    }

    fn prepare(&mut self, _end: &RunEnd) -> Result<()> {
        let context = self.context();
        if let Some(w) = self.writer.take() {
            w.finish().with_context(|| context.clone())?;
        }
        self.file.file().sync_all().with_context(|| context)
    }

    fn commit(mut self: Box<Self>, end: &RunEnd) -> Result<()> {
        self.prepare(end)?;
        self.file.commit()?;
        readable(&self.target);
        Ok(())
    }
}

/// `results.sqlite`, upserted by event id inside one transaction that commits with the
/// run (rolled back when the sink is dropped uncommitted).
pub struct SqliteSink {
    store: SqliteStore,
}

impl SqliteSink {
    /// Opens or creates the database and begins the transaction.
    pub fn open(path: &Path) -> Result<Self> {
        let store = SqliteStore::open(path)?;
        store
            .connection()
            .execute_batch("BEGIN")
            .with_context(|| format!("{}: begin", path.display()))?;
        Ok(SqliteSink { store })
    }
}

impl PredictionSink for SqliteSink {
    fn write(&mut self, chunk: ScoredChunk) -> Result<()> {
        upsert_rows(
            self.store.connection(),
            self.store.path(),
            &chunk.predictions,
        )
    }

    fn commit(self: Box<Self>, _end: &RunEnd) -> Result<()> {
        self.store
            .connection()
            .execute_batch("COMMIT")
            .with_context(|| format!("{}: commit", self.store.path().display()))
    }
}

/// A sink on a thread of its own, fed through a bounded channel.
struct Threaded {
    name: &'static str,
    tx: Option<mpsc::SyncSender<Msg>>,
    handle: Option<JoinHandle<Result<()>>>,
    wants_events: bool,
}

enum Msg {
    Chunk(ScoredChunk),
    /// Prepare, and say how it went; the thread ends after a failure.
    Prepare(Box<RunEnd>, mpsc::Sender<Result<()>>),
    Commit(Box<RunEnd>),
}

impl Threaded {
    fn spawn<S: PredictionSink + Send + 'static>(name: &'static str, sink: S) -> Result<Self> {
        let wants_events = sink.wants_events();
        // Two chunks queued: the scoring runs ahead of a slow store by at most that.
        let (tx, rx) = mpsc::sync_channel::<Msg>(2);
        let handle = std::thread::Builder::new()
            .name(format!("bms-{name}"))
            .spawn(move || -> Result<()> {
                let mut sink = sink;
                for msg in rx {
                    match msg {
                        Msg::Chunk(chunk) => sink.write(chunk)?,
                        Msg::Prepare(end, reply) => {
                            let prepared = sink.prepare(&end);
                            let failed = prepared.is_err();
                            let _ = reply.send(prepared);
                            if failed {
                                return Ok(());
                            }
                        }
                        Msg::Commit(end) => return Box::new(sink).commit(&end),
                    }
                }
                // Closed without a commit: the sink is dropped, nothing is committed.
                Ok(())
            })
            .with_context(|| format!("cannot start the {name} writer thread"))?;
        Ok(Threaded {
            name,
            tx: Some(tx),
            handle: Some(handle),
            wants_events,
        })
    }

    fn send(&mut self, msg: Msg) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        };
        if !sent {
            // The thread stopped on an error: that error says why.
            self.join()?;
            bail!("the {} writer stopped", self.name);
        }
        Ok(())
    }

    /// Waits for the thread; its error, if it had one.
    fn join(&mut self) -> Result<()> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow!("the {} writer panicked", self.name))?,
            None => Ok(()),
        }
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        // Uncommitted: the thread drops its sink (temporary files removed, transaction
        // rolled back) before the caller goes on.
        let _ = self.join();
    }
}

/// The lock file of a store directory.
pub const LOCK_FILE: &str = ".bms-lock";

/// Temporaries older than this are a dead run's (a live one's are written as it goes).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// An exclusive lock on a store directory (`DIR/.bms-lock`): one run writes a directory
/// at a time. Released when dropped, and by the system when the process dies.
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// A lock file that is a symlink, FIFO or device is refused by name: it is never
    /// followed (`O_NOFOLLOW`) and opening it does not wait for a FIFO's reader.
    fn take(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        check_output_file(&path)?;
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        }
        let file = options
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        // Swapped for something else between the check and the open.
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            check_output_file(&path)?;
            bail!("{}: not a regular file", path.display());
        }
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{}: another run is writing this directory (it holds {}); wait for it to end or choose another directory",
                dir.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// Whether a process with id `pid` exists (on this machine; permission to signal it is
/// not needed).
#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0: the checks of kill(2) without a signal.
    // SAFETY: kill with signal 0 sends nothing; it only reports whether pid exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// Removes what runs killed before their end left in `dir` (`.bms-tmp-*` files and
/// directories, `.bms-old-*` directories): at once when the process id in the name is
/// no longer running, else when not written to for a minute (another writer's, such as a
/// `bms daily -o DIR/x.csv`, which takes no lock). Called with the directory's lock held,
/// so no other run of a store directory is writing them.
fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".bms-tmp-") || name.starts_with(".bms-old-")) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default();
        // A dead process's temporaries go at once; any other (a live writer's, or one
        // without an id) only once untouched for a while.
        let dead = bms_core::io::temp_owner(&name).is_some_and(|pid| !process_alive(pid));
        if !dead && age < STALE_AFTER {
            continue;
        }
        let path = entry.path();
        let removed = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed
            .with_context(|| format!("cannot remove {}, left by an earlier run", path.display()))?;
    }
    Ok(())
}

/// Refuses a store directory holding, under one of the names a run writes, something that
/// is not a regular file (`predictions/`: not a directory): a symlink (which could lead out
/// of the directory), a device, a FIFO (SPEC §4). SQLite's journals are written in place,
/// so they are checked too. [`StoreDir::open`] calls it with the directory locked; callers
/// that write other files first can call it before those.
pub fn check_store_paths(dir: &Path) -> Result<()> {
    for name in [
        SQLITE_FILE,
        "results.sqlite-journal",
        "results.sqlite-wal",
        "results.sqlite-shm",
        EVENTS_FILE,
        PARQUET_FILE,
        REJECTS_FILE,
        SUMMARY_FILE,
    ] {
        check_output_file(&dir.join(name))?;
    }
    check_output_dir(&dir.join(PARQUET_DIR))?;
    Ok(())
}

/// The stores of a `bms predict --out DIR` directory: `predictions.parquet` (or
/// `predictions/`), `events.jsonl` and `results.sqlite`, each written on a thread of its
/// own, and on commit `rejects.csv` (`line,reason,source`) and `summary.json`. The
/// directory is locked while they are written (a second run into it is refused), and
/// temporaries of killed runs are removed first. `DIR` may be a symlink to a directory;
/// a file in it under one of those names that is not a regular file (a symlink, a device)
/// is refused by name before anything is written.
pub struct StoreDir {
    dir: PathBuf,
    stores: Vec<Threaded>,
    /// Dropped last: the stores' threads have ended (and cleaned up) before it is released.
    _lock: DirLock,
}

impl StoreDir {
    /// The stores for `model`'s feature names, laid out as `job.partition_by_date` says;
    /// creates `dir` when missing.
    pub fn create(dir: &Path, model: &Model, job: &Job) -> Result<Self> {
        let names = event_field_names(&model.contract().spec);
        StoreDir::open(dir, names, job.partition_by_date)
    }

    /// The stores with feature columns `names`; creates `dir` when missing.
    pub fn open(dir: &Path, names: Vec<String>, partition_by_date: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
        let lock = DirLock::take(dir)?;
        remove_stale_temporaries(dir)?;
        check_store_paths(dir)?;
        let events = EventsSink::create(&dir.join(EVENTS_FILE), &names)?;
        let sqlite = SqliteSink::open(&dir.join(SQLITE_FILE))?;
        let parquet = ParquetSink::create(dir, names, partition_by_date)?;
        Ok(StoreDir {
            dir: dir.to_path_buf(),
            stores: vec![
                Threaded::spawn("sqlite", sqlite)?,
                Threaded::spawn("parquet", parquet)?,
                Threaded::spawn("events", events)?,
            ],
            _lock: lock,
        })
    }
}

impl PredictionSink for StoreDir {
    fn wants_events(&self) -> bool {
        self.stores.iter().any(|s| s.wants_events)
    }

    fn write(&mut self, chunk: ScoredChunk) -> Result<()> {
        let ScoredChunk {
            predictions,
            mut events,
        } = chunk;
        for s in &mut self.stores {
            // Only the events writer gets (and frees) the events text.
            let events = if s.wants_events {
                std::mem::take(&mut events)
            } else {
                Vec::new()
            };
            s.send(Msg::Chunk(ScoredChunk {
                predictions: predictions.clone(),
                events,
            }))?;
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>, end: &RunEnd) -> Result<()> {
        let dir = self.dir.clone();
        let mut rejects = AtomicFile::create(&dir.join(REJECTS_FILE))?;
        {
            let mut w = rejects.writer();
            let mut line = String::new();
            w.write_all(b"line,reason,source\n")?;
            for (r, src) in end.rejects.iter().zip(end.sources.iter()) {
                line.clear();
                line.push_str(&r.line.to_string());
                line.push(',');
                push_text(&mut line, &r.reason);
                line.push(',');
                push_text(&mut line, src);
                line.push('\n');
                w.write_all(line.as_bytes())?;
            }
            w.flush()
                .with_context(|| format!("writing {}", dir.join(REJECTS_FILE).display()))?;
        }
        rejects
            .file()
            .sync_all()
            .with_context(|| format!("writing {}", dir.join(REJECTS_FILE).display()))?;
        // Two phases, so that a failure (a full disk) publishes nothing: every store first
        // finishes and syncs its files under temporary names (in parallel: one fsync after
        // the other was a serial tail of ~0.1 s on 200,000 rows) …
        let mut replies = Vec::with_capacity(self.stores.len());
        for s in &mut self.stores {
            let (tx, rx) = mpsc::channel();
            s.send(Msg::Prepare(Box::new(end.clone()), tx))?;
            replies.push(rx);
        }
        for (s, rx) in self.stores.iter_mut().zip(replies) {
            match rx.recv() {
                Ok(prepared) => prepared?,
                Err(_) => {
                    s.join()?;
                    bail!("the {} writer stopped", s.name);
                }
            }
        }
        let mut summary = end.summary.clone();
        summary.seconds = end.started.elapsed().as_secs_f64();
        let path = dir.join(SUMMARY_FILE);
        let mut f = AtomicFile::create(&path)?;
        f.file()
            .write_all(summary.to_json().as_bytes())
            .and_then(|()| f.file().sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        // … then SQLite commits, the one step left that may need room (its journal); a
        // failure there still leaves every file as it was …
        let (sqlite, files): (Vec<&mut Threaded>, Vec<&mut Threaded>) =
            self.stores.iter_mut().partition(|s| s.name == "sqlite");
        for s in sqlite {
            s.send(Msg::Commit(Box::new(end.clone())))?;
            s.join()?;
        }
        // … and the files are renamed into place.
        let mut files = files;
        for s in files.iter_mut() {
            s.send(Msg::Commit(Box::new(end.clone())))?;
        }
        let mut first_error = None;
        for s in files.iter_mut() {
            if let Err(e) = s.join() {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        rejects.commit()?;
        readable(&dir.join(REJECTS_FILE));
        f.commit()?;
        readable(&path);
        Ok(())
    }
}

/// Temporary files are created owner-only; outputs are for dashboards and colleagues too.
pub fn readable(path: &Path) {
    #[cfg(unix)]
    if path.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }
    #[cfg(not(unix))]
    let _ = path;
}
