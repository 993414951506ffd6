//! The frames journal: every accepted report packet, byte for byte, appended to
//! `DIR/journal/<segment>.gbt32960` and fsynced before the vehicle gets its success reply.
//!
//! A segment is itself a GB/T 32960 capture (`bms ingest` reads it), so reading it back
//! gives the very frames the connections decoded. One writer thread owns the file: it takes
//! every append queued while it was busy as one group (one `write` each, one `fdatasync`
//! for all), then answers each waiter. A failed write or sync truncates the file back to
//! its last synced length and fails every append of the group, so no waiter is told
//! "durable" for bytes that may not be, and no unacknowledged bytes stay in the segment.
//!
//! [`flush_segment`] turns a closed segment into the date-partitioned frames store
//! (`DIR/frames/date=YYYY-MM-DD/part-<segment>.parquet`, each file written atomically and
//! fsynced, directories fsynced) and only then removes the segment. The part names derive
//! from the segment's name, so flushing a segment again after a crash between the two steps
//! rewrites the same files instead of adding duplicates.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use bms_core::daily::date_of_day;
use bms_core::gbt32960::{Decoder, Event};
use bms_core::io::parquet::FramesParquetWriter;
use bms_core::{Frames, UtcOffset};
use chrono::NaiveDate;
use tokio::sync::oneshot;

/// The journal directory inside the gateway's store directory.
pub const JOURNAL_DIR: &str = "journal";
/// The frames store directory inside the gateway's store directory.
pub const FRAMES_DIR: &str = "frames";
/// Extension of journal segments.
pub const SEGMENT_EXT: &str = "gbt32960";

/// Test hook: every append fails once this many bytes have been synced (to prove a failed
/// durable write is never acknowledged).
const FAIL_HOOK: &str = "BMS_TEST_JOURNAL_FAIL_AFTER_BYTES";

struct Append {
    bytes: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

enum Msg {
    Append(Append),
    /// Close the segment (every earlier append is answered first) and open a new one:
    /// answered with the closed segment's path, `None` when it held nothing.
    Rotate(oneshot::Sender<Result<Option<PathBuf>, String>>),
}

/// The open journal segment and its writer thread.
pub struct Journal {
    path: std::sync::Arc<Mutex<PathBuf>>,
    tx: Mutex<Option<Sender<Msg>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Creates a new, empty segment file under `jdir` (its name: creation time in ms, pid, a
/// counter) and syncs the directory.
fn new_segment(jdir: &Path) -> Result<(PathBuf, File)> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for k in 0u32..1000 {
        let p = jdir.join(format!(
            "{stamp:013}-{}-{k}.{SEGMENT_EXT}",
            std::process::id()
        ));
        match OpenOptions::new().create_new(true).append(true).open(&p) {
            Ok(f) => {
                sync_dir(jdir)?;
                return Ok((p, f));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", p.display())),
        }
    }
    anyhow::bail!("no free segment name in {}", jdir.display())
}

impl Journal {
    /// Creates a new segment under `dir/journal/` and starts its writer.
    pub fn create(dir: &Path) -> Result<Journal> {
        let jdir = dir.join(JOURNAL_DIR);
        std::fs::create_dir_all(&jdir)
            .with_context(|| format!("cannot create {}", jdir.display()))?;
        let (path, file) = new_segment(&jdir)?;
        let path = std::sync::Arc::new(Mutex::new(path));
        let fail_after = std::env::var(FAIL_HOOK)
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        let (tx, rx) = channel();
        let p = path.clone();
        let writer = std::thread::Builder::new()
            .name("bms-journal".into())
            .spawn(move || write_loop(file, &jdir, &p, rx, fail_after))
            .context("cannot start the journal writer")?;
        Ok(Journal {
            path,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The open segment's path.
    pub fn path(&self) -> PathBuf {
        self.path.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes the open segment after every append queued before this call is answered,
    /// and opens a new one for the later appends. Returns the closed segment, to be
    /// flushed, or `None` when it held nothing (it is then kept open).
    pub async fn rotate(&self) -> Result<Option<PathBuf>, String> {
        let (done, wait) = oneshot::channel();
        {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let Some(tx) = tx.as_ref() else {
                return Err("the journal is closed".into());
            };
            tx.send(Msg::Rotate(done))
                .map_err(|_| "the journal writer stopped".to_owned())?;
        }
        wait.await
            .unwrap_or_else(|_| Err("the journal writer stopped".into()))
    }

    /// Appends `bytes` and resolves once they are on disk (written and fsynced), or with
    /// the reason they may not be.
    pub async fn append(&self, bytes: Vec<u8>) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        {
            let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
            let Some(tx) = tx.as_ref() else {
                return Err("the journal is closed".into());
            };
            tx.send(Msg::Append(Append { bytes, done }))
                .map_err(|_| "the journal writer stopped".to_owned())?;
        }
        wait.await
            .unwrap_or_else(|_| Err("the journal writer stopped".into()))
    }

    /// Closes the segment once every queued append is answered.
    pub fn finish(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take()
            && w.join().is_err()
        {
            eprintln!("bms gateway: the journal writer panicked");
        }
    }
}

fn write_loop(
    mut file: File,
    jdir: &Path,
    current: &Mutex<PathBuf>,
    rx: Receiver<Msg>,
    fail_after: Option<u64>,
) {
    let mut synced = 0u64;
    // Bytes synced into earlier segments (for the test hook, which counts all of them).
    let mut before = 0u64;
    let mut next: Option<Msg> = None;
    loop {
        let first = match next.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let first = match first {
            Msg::Append(a) => a,
            Msg::Rotate(done) => {
                let answer = if synced == 0 {
                    Ok(None)
                } else {
                    match new_segment(jdir) {
                        Ok((p, f)) => {
                            let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
                            let old = std::mem::replace(&mut *cur, p);
                            file = f;
                            before += synced;
                            synced = 0;
                            Ok(Some(old))
                        }
                        Err(e) => Err(format!("{e:#}")),
                    }
                };
                let _ = done.send(answer);
                continue;
            }
        };
        let path = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let path = path.as_path();
        let mut group = vec![first];
        while let Ok(more) = rx.try_recv() {
            match more {
                Msg::Append(a) => group.push(a),
                rotate @ Msg::Rotate(_) => {
                    next = Some(rotate);
                    break;
                }
            }
        }
        let result = (|| -> std::io::Result<u64> {
            let mut len = synced;
            for a in &group {
                if fail_after.is_some_and(|n| before + len + a.bytes.len() as u64 > n) {
                    return Err(std::io::Error::other("test hook: journal write refused"));
                }
                file.write_all(&a.bytes)?;
                len += a.bytes.len() as u64;
            }
            file.sync_data()?;
            Ok(len)
        })();
        let answer = match result {
            Ok(len) => {
                synced = len;
                Ok(())
            }
            Err(e) => {
                // Nothing past the last synced length may stay: it was never acknowledged.
                let restored = file
                    .set_len(synced)
                    .and_then(|()| file.seek(SeekFrom::Start(synced)).map(|_| ()))
                    .and_then(|()| file.sync_data());
                let why = format!("writing {}: {e}", path.display());
                eprintln!("bms gateway: journal write failed: {why}");
                if let Err(t) = restored {
                    eprintln!(
                        "bms gateway: cannot truncate {} back to {synced} bytes: {t}",
                        path.display()
                    );
                }
                Err(why)
            }
        };
        for a in group {
            let _ = a.done.send(answer.clone());
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// Segments left in `dir/journal/` (by a gateway that did not exit gracefully), oldest
/// name first.
pub fn leftover_segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let jdir = dir.join(JOURNAL_DIR);
    let mut found = Vec::new();
    match std::fs::read_dir(&jdir) {
        Ok(entries) => {
            for e in entries {
                let p = e.with_context(|| jdir.display().to_string())?.path();
                if p.extension().is_some_and(|x| x == SEGMENT_EXT) {
                    found.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", jdir.display())),
    }
    found.sort();
    Ok(found)
}

/// The frames store file of `date` that segment `segment` flushes to.
pub fn part_path(dir: &Path, date: NaiveDate, segment: &Path) -> PathBuf {
    let stem = segment
        .file_stem()
        .map_or_else(|| "segment".into(), |s| s.to_string_lossy().into_owned());
    dir.join(FRAMES_DIR)
        .join(format!("date={}", date.format("%Y-%m-%d")))
        .join(format!("part-{stem}.parquet"))
}

/// Frames decoded and held per date before they are written out.
const BATCH_FRAMES: usize = 4096;

/// Writes the frames of a closed segment into the date-partitioned frames store (calendar
/// days at `offset`), then removes the segment. Returns the number of frames.
pub fn flush_segment(dir: &Path, segment: &Path, offset: UtcOffset) -> Result<u64> {
    let mut input =
        File::open(segment).with_context(|| format!("cannot open {}", segment.display()))?;
    let mut writers: BTreeMap<i64, (PathBuf, FramesParquetWriter)> = BTreeMap::new();
    let mut pending: BTreeMap<i64, Frames> = BTreeMap::new();
    let mut decoder = Decoder::new();
    let mut chunk = vec![0u8; 1 << 18];
    let mut frames = 0u64;
    let mut write = |day: i64, batch: &Frames| -> Result<()> {
        let (_, w) = match writers.entry(day) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let date = date_of_day(day).context("a frame's date is outside the calendar")?;
                let path = part_path(dir, date, segment);
                let parent = path.parent().expect("a partition directory");
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
                let w = FramesParquetWriter::create(&path)?;
                v.insert((path, w))
            }
        };
        Ok(w.write(batch.iter())?)
    };
    loop {
        let n = input
            .read(&mut chunk)
            .with_context(|| format!("reading {}", segment.display()))?;
        if n == 0 {
            decoder.finish();
        } else {
            decoder.push(&chunk[..n]);
        }
        while let Some(event) = decoder.next() {
            match event {
                Event::Frame(_, f) => {
                    let day = offset.day_number(f.timestamp_ms);
                    let batch = pending.entry(day).or_default();
                    batch.push(f, 0);
                    frames += 1;
                    if batch.len() >= BATCH_FRAMES {
                        let full = std::mem::take(batch);
                        write(day, &full)?;
                    }
                }
                Event::Packet(_) => {}
                // Only whole accepted packets are journaled; a bad tail is a torn write of
                // bytes that were never acknowledged.
                Event::Error(e) => eprintln!(
                    "bms gateway: {}: skipped unreadable journal bytes: {e}",
                    segment.display()
                ),
            }
        }
        if n == 0 {
            break;
        }
    }
    for (day, batch) in std::mem::take(&mut pending) {
        if !batch.is_empty() {
            write(day, &batch)?;
        }
    }
    let mut dirs = Vec::new();
    for (_, (path, w)) in writers {
        w.finish()?;
        dirs.push(path.parent().expect("a partition directory").to_path_buf());
    }
    for d in &dirs {
        sync_dir(d)?;
    }
    if !dirs.is_empty() {
        sync_dir(&dir.join(FRAMES_DIR))?;
    }
    std::fs::remove_file(segment)
        .with_context(|| format!("cannot remove {}", segment.display()))?;
    if let Some(parent) = segment.parent() {
        sync_dir(parent)?;
    }
    Ok(frames)
}
