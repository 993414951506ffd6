//! [`score`]: an input file scored with a model, in bounded chunks, into a
//! [`PredictionSink`].
//!
//! Batch CSV is read by a thread of its own in blocks of whole lines and parsed and
//! scored on all cores; daily tables and frames are read (frames CSV aggregated as it is
//! read, when in time order per vehicle), cut into windows and scored in chunks. The sink
//! receives every chunk in input order and, once the whole input was read and every
//! record is accounted for (scored or rejected), is told to commit.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bms_core::io::batch_csv::{BatchOptions, read_batch_csv_from};
use bms_core::io::{self, ReadMode, Reject};
use bms_core::model::Model;
use bms_core::{DailyConfig, DailyTable, WindowKey};
use ndarray::{Array2, Axis};
use rayon::prelude::*;

use crate::input::{FileKind, InputFormat, detect_format};
use crate::sink::{PredictionSink, RunEnd, ScoredChunk, StoreDir};
use crate::store::{EventKeys, Prediction, event_field_names, write_event_json};
use crate::summary::{Evaluation, Summary};

/// Lines per chunk of a batch CSV, and windows per chunk of a daily table: bounds memory
/// (~a few MB of text and features).
pub const CHUNK_LINES: usize = 32_768;
/// Bytes per block read from a batch CSV (whole lines; more when one line is longer).
pub const CHUNK_BYTES: usize = 32 << 20;
/// Bytes per part of a block, the unit parsed and scored on one core.
pub const PART_BYTES: usize = 4 << 20;
/// Rows per part when a chunk is cut from an in-memory table.
pub const PART_ROWS: usize = 4096;

/// How to score an input: what it holds, how to treat bad records, the threshold, how
/// frames become days, how the stores are laid out, and the chunk sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// What the input holds; told by [`detect_format`] when `None`.
    pub format: Option<InputFormat>,
    /// Stop at the first bad record instead of setting it aside as a reject.
    pub strict: bool,
    /// Alarm threshold instead of the model's.
    pub threshold: Option<f32>,
    /// Frames input: the OCV curve, alarm spread and UTC offset of the daily table.
    pub daily_config: DailyConfig,
    /// [`StoreDir`]: `predictions/date=YYYY-MM-DD/part-0.parquet` (Hive layout) instead of
    /// one `predictions.parquet`.
    pub partition_by_date: bool,
    /// Lines (batch CSV, frames CSV) or windows (tables) per chunk; at least 1.
    pub chunk_lines: usize,
    /// Bytes per block of a batch CSV.
    pub chunk_bytes: usize,
    /// Bytes per part of a block: the unit parsed and scored on one core.
    pub part_bytes: usize,
    /// Windows per part of a chunk cut from a table.
    pub part_rows: usize,
    /// Batch input: whether each line ends with a label (`bms windows --labels`); told
    /// from the first line when `None`. Labelled runs get [`Summary::evaluation`].
    pub labels: Option<bool>,
    /// For tests: fail the run once more than this many predictions were handed to the
    /// sink (an interrupted run must leave the previous outputs as they were).
    pub fail_after_rows: Option<u64>,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            format: None,
            strict: false,
            threshold: None,
            daily_config: DailyConfig::default(),
            partition_by_date: false,
            chunk_lines: CHUNK_LINES,
            chunk_bytes: CHUNK_BYTES,
            part_bytes: PART_BYTES,
            part_rows: PART_ROWS,
            labels: None,
            fail_after_rows: None,
        }
    }
}

impl Job {
    fn mode(&self) -> ReadMode {
        if self.strict {
            ReadMode::Strict
        } else {
            ReadMode::Lenient
        }
    }
    fn chunk_lines(&self) -> usize {
        self.chunk_lines.max(1)
    }
}

/// The counts of an input's records, reported once the reader has seen them all.
#[derive(Debug, Clone, Copy)]
pub struct ReadCounts<'a> {
    /// What a record is: `lines`, `daily rows` or `frames`.
    pub what: &'static str,
    pub read: u64,
    pub accepted: u64,
    pub rejects: &'a [Reject],
}

impl<'a> ReadCounts<'a> {
    /// The counts of a reader's report; `what` names its records.
    pub fn of<T>(what: &'static str, r: &'a io::ReadReport<T>) -> Self {
        ReadCounts {
            what,
            read: r.read,
            accepted: r.accepted,
            rejects: &r.rejects,
        }
    }
}

/// What a run tells its caller while it works; every method does nothing by default.
/// The library prints nothing: the command line draws a progress bar and prints counts.
pub trait Observer: Sync {
    /// The amount of work ahead, in the unit of [`Observer::advance`]: bytes of a batch
    /// CSV, windows of a table. May be called more than once (the later value holds).
    fn total(&self, _n: u64) {}
    /// This much more work was read.
    fn advance(&self, _n: u64) {}
    /// The input's records were all read.
    fn counts(&self, _input: &Path, _counts: &ReadCounts<'_>) {}
    /// Something the user should know that is not an error (e.g. frames out of time
    /// order, so the whole file is read and sorted).
    fn notice(&self, _input: &Path, _message: &str) {}
    /// Reading and scoring are over (committing follows).
    fn finished(&self) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Scores `input` with `model` into the stores of a directory ([`StoreDir`], laid out as
/// `job.partition_by_date` says): the whole job of `bms predict --out DIR`.
pub fn score_to_dir(
    input: &Path,
    model: &Model,
    job: &Job,
    dir: &Path,
    observer: &dyn Observer,
) -> Result<Summary> {
    // A bad threshold or an unreadable input is refused before the directory is touched.
    let (format, _) = prepare(input, model, job)?;
    let job = Job {
        format: Some(format),
        ..job.clone()
    };
    let sink = StoreDir::create(dir, model, &job)?;
    score(input, model, &job, Box::new(sink), observer)
}

/// The input's format and the threshold, checked.
fn prepare(input: &Path, model: &Model, job: &Job) -> Result<(InputFormat, f32)> {
    model.require_probability()?;
    let threshold = job.threshold.unwrap_or(model.contract().threshold);
    anyhow::ensure!(
        (0.0..=1.0).contains(&threshold),
        "--threshold {threshold} is not a probability between 0 and 1"
    );
    let format = match job.format {
        Some(f) => f,
        None => detect_format(input)?,
    };
    Ok((format, threshold))
}

/// Scores `input` with `model` under `job`, handing each chunk of predictions to `sink`
/// in input order; once the whole input was read and every record is accounted for
/// (scored or rejected), commits the sink. On any error the sink is dropped uncommitted
/// (a [`StoreDir`] then leaves the previous outputs as they were) and the error returned.
pub fn score(
    input: &Path,
    model: &Model,
    job: &Job,
    mut sink: Box<dyn PredictionSink + '_>,
    observer: &dyn Observer,
) -> Result<Summary> {
    let start = Instant::now();
    let contract = model.contract();
    let (format, threshold) = prepare(input, model, job)?;
    let names = event_field_names(&contract.spec);
    let keys = EventKeys::new(&names);
    let mut summary = Summary {
        input: input.display().to_string(),
        format: Some(format),
        model_id: contract.model_id.clone(),
        threshold,
        feature_names: names,
        fill_value: contract.spec.fill,
        horizon_days: u32::try_from(contract.spec.horizon).ok(),
        partitioned: job.partition_by_date,
        ..Default::default()
    };
    let with_events = sink.wants_events();
    let mut vins = HashSet::new();
    let mut handed = 0u64;
    let mut labelled: Vec<(f32, f32)> = Vec::new();
    let (read, rejects) = for_each_chunk(model, input, job, format, observer, |chunk| {
        let (preds, events) =
            score_chunk(model, chunk, threshold, &keys, with_events, &mut labelled)?;
        count(&mut summary, &mut vins, &preds);
        handed += preds.len() as u64;
        sink.write(ScoredChunk {
            predictions: Arc::new(preds),
            events,
        })?;
        if let Some(n) = job.fail_after_rows
            && handed > n
        {
            bail!("injected failure after {handed} rows (Job::fail_after_rows)");
        }
        Ok(())
    })?;
    observer.finished();
    summary.rows_read = read;
    summary.rows_rejected = rejects.len() as u64;
    summary.vehicles = vins.len() as u64;
    if labelled.len() as u64 == summary.scored && summary.scored > 0 {
        summary.evaluation = Some(Evaluation::of(&labelled, threshold));
    }
    check_conservation(&summary, format, input)?;
    if format == InputFormat::Batch {
        observer.counts(
            input,
            &ReadCounts {
                what: format.records(),
                read,
                accepted: summary.scored,
                rejects: &rejects,
            },
        );
    }
    let sources = source_lines(input, &rejects);
    summary.seconds = start.elapsed().as_secs_f64();
    sink.commit(&RunEnd {
        rejects: rejects.into(),
        sources: sources.into(),
        summary: summary.clone(),
        started: start,
    })?;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// A frames CSV aggregated in chunks of lines, so memory holds one chunk of frames plus
/// the daily table. Frames must come in time order per vehicle (as loggers write them);
/// `None` when they do not, and the caller reads the whole file and sorts it instead.
fn frames_csv_streaming(
    path: &Path,
    job: &Job,
    observer: &dyn Observer,
) -> Result<Option<io::ReadReport<DailyTable>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    // The header, after any blank lines.
    let mut header = Vec::new();
    let mut line_no = 0u64;
    loop {
        header.clear();
        if r.read_until(b'\n', &mut header)? == 0 {
            return Ok(None); // empty: the whole-file reader says so
        }
        line_no += 1;
        if !header.iter().all(u8::is_ascii_whitespace) {
            break;
        }
    }
    if !header.ends_with(b"\n") {
        header.push(b'\n');
    }
    let mut agg = bms_core::daily::DailyAggregator::new(job.daily_config.clone());
    let mut read = 0u64;
    let mut accepted = 0u64;
    let mut rejects = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        buf.extend_from_slice(&header);
        let first = line_no + 1;
        let mut n = 0;
        while n < job.chunk_lines() {
            let got = r
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if got == 0 {
                break;
            }
            n += 1;
        }
        if n == 0 {
            break;
        }
        line_no += n as u64;
        let rep = io::frame_csv::read_frame_csv_from(&buf[..], Some(path), ReadMode::Lenient)?;
        // Line 1 of `buf` is the header, line 2 the chunk's first line.
        let actual = |l: u64| first + l - 2;
        read += rep.read;
        accepted += rep.accepted;
        for rj in rep.rejects {
            let line = actual(rj.line);
            if job.strict {
                bail!("{}, line {line}: {}", path.display(), rj.reason);
            }
            rejects.push(Reject {
                line,
                reason: rj.reason,
            });
        }
        for i in 0..rep.data.len() {
            let line = actual(rep.data.line(i));
            match agg.push(&rep.data.get(i), line) {
                Ok(()) => {}
                Err(bms_core::BmsError::OutOfOrder { .. }) => {
                    observer.notice(
                        path,
                        &format!(
                            "line {line}: frames are not in time order per vehicle; reading the whole file and sorting it"
                        ),
                    );
                    return Ok(None);
                }
                // Lenient: a repeated (vin, timestamp) is a reject of its line (the first
                // frame is kept), as `bms daily --lenient` does.
                Err(e @ bms_core::BmsError::DuplicateFrame { .. }) if !job.strict => {
                    accepted -= 1;
                    rejects.push(Reject {
                        line,
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("{}", path.display()))),
            }
        }
    }
    Ok(Some(io::ReadReport {
        data: agg.finish(),
        read,
        accepted,
        rejects,
    }))
}

/// Windows ready to score, in parts that are scored on separate cores.
struct Chunk {
    parts: Vec<Part>,
}

struct Part {
    keys: Vec<WindowKey>,
    x: Array2<f32>,
    /// The label of each row, for labelled batch input.
    labels: Option<Vec<f32>>,
}

/// Scores a chunk's parts on all cores; returns the predictions in input order and, with
/// `with_events`, their event lines (one string per part).
fn score_chunk(
    model: &Model,
    chunk: Chunk,
    threshold: f32,
    keys: &EventKeys,
    with_events: bool,
    labelled: &mut Vec<(f32, f32)>,
) -> Result<(Vec<Prediction>, Vec<String>)> {
    let model_id = &model.contract().model_id;
    let scored = chunk
        .parts
        .into_par_iter()
        .map(
            |part| -> bms_core::Result<(Vec<Prediction>, String, Option<Vec<f32>>)> {
                let probs = model.predict(part.x.view())?;
                debug_assert_eq!(probs.len(), part.keys.len());
                let preds: Vec<Prediction> = part
                    .keys
                    .iter()
                    .zip(probs.iter())
                    .zip(part.x.rows())
                    .map(|((k, &p), row)| {
                        Prediction::new(&k.vin, k.date, p, threshold, model_id, row.to_vec())
                    })
                    .collect();
                let mut events = String::new();
                if with_events {
                    // Room for the longest events (36-character keys, 15-character floats): one
                    // allocation, never a copy of a grown string.
                    events.reserve(preds.len() * (256 + 52 * part.x.ncols()));
                    for p in &preds {
                        write_event_json(&mut events, p, keys);
                        events.push('\n');
                    }
                }
                Ok((preds, events, part.labels))
            },
        )
        .collect::<bms_core::Result<Vec<_>>>()?;
    let mut preds = Vec::with_capacity(scored.iter().map(|s| s.0.len()).sum());
    let mut events = Vec::with_capacity(scored.len());
    for (p, e, labels) in scored {
        if let Some(labels) = labels {
            labelled.extend(p.iter().map(|p| p.predicted_prob).zip(labels));
        }
        preds.extend(p);
        events.push(e);
    }
    Ok((preds, events))
}

/// Reads windows from the input in bounded chunks, handing each to `each`; returns
/// (records read, rejects).
fn for_each_chunk(
    model: &Model,
    path: &Path,
    job: &Job,
    format: InputFormat,
    observer: &dyn Observer,
    mut each: impl FnMut(Chunk) -> Result<()>,
) -> Result<(u64, Vec<Reject>)> {
    let mode = job.mode();
    let table: DailyTable;
    let (read, rejects) = match format {
        InputFormat::Batch => return batch_chunks(model, path, job, observer, each),
        InputFormat::Daily => match FileKind::of(path)? {
            FileKind::Capture => anyhow::bail!(
                "{}: a GB/T 32960 capture holds frames, not a daily table (use --format frames)",
                path.display()
            ),
            FileKind::Csv => {
                let r = io::read_daily_csv(path, mode)?;
                observer.counts(path, &ReadCounts::of("daily rows", &r));
                table = r.data;
                (r.read, r.rejects)
            }
            FileKind::Parquet => {
                table = io::read_daily_parquet(path)?;
                (table.len() as u64, Vec::new())
            }
        },
        InputFormat::Frames => {
            let streamed = match FileKind::of(path)? {
                FileKind::Csv => frames_csv_streaming(path, job, observer)?,
                FileKind::Parquet | FileKind::Capture => None,
            };
            match streamed {
                Some(r) => {
                    observer.counts(path, &ReadCounts::of("frames", &r));
                    table = r.data;
                    (r.read, r.rejects)
                }
                None => {
                    let mut r = match FileKind::of(path)? {
                        FileKind::Csv => io::read_frame_csv(path, mode)?,
                        FileKind::Parquet => io::read_frames_parquet(path, mode)?,
                        FileKind::Capture => {
                            let r = bms_core::gbt32960::read_capture(path, mode)?;
                            observer.notice(path, &r.counts.to_string());
                            r.frames
                        }
                    };
                    table = bms_core::daily::aggregate_report(
                        &mut r,
                        &job.daily_config,
                        Some(path),
                        mode,
                    )?;
                    observer.counts(path, &ReadCounts::of("frames", &r));
                    (r.read, r.rejects)
                }
            }
        }
    };
    let spec = &model.contract().spec;
    let batch = bms_core::windows(&table, spec)?;
    observer.total(batch.len() as u64);
    let n = batch.len();
    let mut keys = batch.keys.into_iter();
    for (i, x) in batch
        .x
        .axis_chunks_iter(Axis(0), job.chunk_lines())
        .enumerate()
    {
        let parts = x
            .axis_chunks_iter(Axis(0), job.part_rows.max(1))
            .map(|x| Part {
                keys: keys.by_ref().take(x.nrows()).collect(),
                x: x.to_owned(),
                labels: None,
            })
            .collect();
        observer.advance(x.nrows() as u64);
        each(Chunk { parts })?;
        debug_assert!(i * job.chunk_lines() < n);
    }
    Ok((read, rejects))
}

/// The batch CSV in chunks of at most [`CHUNK_LINES`] lines (and about [`CHUNK_BYTES`]),
/// read by a thread of its own and parsed on all cores, one part per core at a time.
fn batch_chunks(
    model: &Model,
    path: &Path,
    job: &Job,
    observer: &dyn Observer,
    mut each: impl FnMut(Chunk) -> Result<()>,
) -> Result<(u64, Vec<Reject>)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    observer.total(total_bytes);
    let width = model.input_width();
    let labels = match job.labels {
        Some(l) => l,
        None => {
            // The first line tells; 1 MB holds it unless it is absurdly long.
            let mut head = Vec::new();
            (&file)
                .take(1 << 20)
                .read_to_end(&mut head)
                .with_context(|| format!("reading {}", path.display()))?;
            std::io::Seek::rewind(&mut (&file))
                .with_context(|| format!("reading {}", path.display()))?;
            bms_core::io::batch_csv::has_label_column(&head, width)
        }
    };
    let missing = model.missing_values_refusal();
    // Every window's first line, to refuse conflicting duplicates (16-byte fingerprints).
    let mut seen = bms_core::io::batch_csv::FingerprintMap::default();
    let mut duplicates = Vec::new();
    let mut read = 0u64;
    let mut rejects = Vec::new();
    // Blocks come from the reader thread; their buffers go back to it for reuse.
    let (block_tx, block_rx) = mpsc::sync_channel::<Result<Block>>(1);
    let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| -> Result<()> {
        // Owned here, so that leaving this closure early (an error) also tells a reader
        // waiting for a spare buffer to stop.
        let spare_tx = spare_tx;
        let limits = BlockLimits {
            max_lines: job.chunk_lines(),
            chunk_bytes: job.chunk_bytes.max(1),
            part_bytes: job.part_bytes.max(1),
            total_bytes,
        };
        scope.spawn(move || read_blocks(file, path, limits, &block_tx, &spare_rx));
        for block in block_rx {
            let block = block?;
            observer.advance(block.buf.len() as u64);
            let reports = block
                .parts
                .par_iter()
                .map(|&(a, b, line0)| {
                    read_batch_csv_from(
                        &block.buf[a..b],
                        Some(path),
                        BatchOptions {
                            width,
                            labels,
                            mode: ReadMode::Lenient,
                        },
                    )
                    .map(|rep| {
                        let fingerprints = rep.data.key_fingerprints();
                        (rep, fingerprints, line0)
                    })
                })
                .collect::<bms_core::Result<Vec<_>>>()?;
            let _ = spare_tx.send(block.buf);
            let mut parts = Vec::with_capacity(reports.len());
            for (mut rep, fingerprints, line0) in reports {
                read += rep.read;
                let mut fingerprints = fingerprints;
                if let Some(why) = &missing {
                    let removed = rep.data.remove_missing();
                    if !removed.is_empty() {
                        fingerprints = rep.data.key_fingerprints();
                    }
                    // Lines are relative to the part; the rejects are sorted below.
                    for (line, col) in removed {
                        rep.rejects.push(bms_core::io::Reject {
                            line,
                            reason: format!("column {col}: a missing value (nan), and {why}"),
                        });
                    }
                    rep.rejects.sort_by_key(|r| r.line);
                }
                for (line, first) in rep.data.remove_duplicates(&fingerprints, &mut seen, line0) {
                    if job.strict {
                        bail!(
                            "{}, lines {first} and {line}: the same VIN and Date twice",
                            path.display()
                        );
                    }
                    duplicates.push(Reject {
                        line,
                        reason: format!(
                            "the same VIN and Date as line {first} (the first is scored)"
                        ),
                    });
                }
                for rj in rep.rejects {
                    let line = rj.line + line0 - 1;
                    if job.strict {
                        bail!("{}, line {line}: {}", path.display(), rj.reason);
                    }
                    rejects.push(Reject {
                        line,
                        reason: rj.reason,
                    });
                }
                if !rep.data.keys.is_empty() {
                    parts.push(Part {
                        keys: rep.data.keys,
                        x: rep.data.x,
                        labels: rep.data.labels,
                    });
                }
            }
            if !parts.is_empty() {
                each(Chunk { parts })?;
            }
        }
        // Dropping the receiver (an early error above) stops the reader at its next send.
        Ok(())
    })?;
    if !duplicates.is_empty() {
        rejects.extend(duplicates);
        rejects.sort_by_key(|r| r.line);
    }
    Ok((read, rejects))
}

/// Whole lines of a batch CSV: `parts` are `(start, end, number of the first line)` in
/// `buf`, each ending after a newline (the last may end at the end of the file).
struct Block {
    buf: Vec<u8>,
    parts: Vec<(usize, usize, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct BlockLimits {
    max_lines: usize,
    chunk_bytes: usize,
    part_bytes: usize,
    /// The input's size when known (else 0): blocks near the end shrink to a third of
    /// what is left (at least two parts), so that the last block, whose rows the stores
    /// write after everything else is scored, is small (see [`block_bytes`]).
    total_bytes: u64,
}

/// The reader thread of [`batch_chunks`]: cuts the input into blocks of at most
/// `max_lines` lines and about `chunk_bytes` (whole lines), in parts of about
/// `part_bytes`, reusing the buffers that come back through `spare`.
fn read_blocks(
    mut file: impl Read,
    path: &Path,
    limits: BlockLimits,
    tx: &mpsc::SyncSender<Result<Block>>,
    spare: &mpsc::Receiver<Vec<u8>>,
) {
    let BlockLimits {
        max_lines,
        chunk_bytes,
        part_bytes,
        total_bytes,
    } = limits;
    let mut carry: Vec<u8> = Vec::new();
    let mut eof = false;
    let mut next_line = 1u64;
    let mut consumed = 0u64;
    // At most BUFFERS blocks exist at a time (being filled, queued, being parsed);
    // after that, the reader waits for a buffer to come back.
    const BUFFERS: usize = 3;
    let mut allocated = 0;
    loop {
        let mut buf = match spare.try_recv() {
            Ok(b) => b,
            Err(_) if allocated < BUFFERS => {
                allocated += 1;
                Vec::new()
            }
            Err(_) => match spare.recv() {
                Ok(b) => b,
                Err(_) => return, // the consumer stopped
            },
        };
        buf.clear();
        buf.extend_from_slice(&carry);
        carry.clear();
        // Fill to chunk_bytes (less near the end), and beyond until the block holds a
        // newline.
        let mut want = block_bytes(chunk_bytes, part_bytes, total_bytes, consumed);
        let mut scanned = 0;
        loop {
            if buf.len() < want && !eof {
                // Room for the whole read at once: no growing (and copying) on the way.
                buf.reserve(want - buf.len());
                let limit = (want - buf.len()) as u64;
                match (&mut file).take(limit).read_to_end(&mut buf) {
                    Ok(0) => eof = true,
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx
                            .send(Err(anyhow::Error::new(e)
                                .context(format!("reading {}", path.display()))));
                        return;
                    }
                }
            }
            if eof || memchr::memchr(b'\n', &buf[scanned..]).is_some() {
                break;
            }
            scanned = buf.len();
            want = buf.len() * 2;
        }
        if buf.is_empty() {
            return;
        }
        let mut parts = Vec::new();
        let (mut start, mut start_line, mut lines) = (0usize, next_line, 0u64);
        let mut end = 0usize;
        for nl in memchr::memchr_iter(b'\n', &buf) {
            end = nl + 1;
            lines += 1;
            if lines as usize >= max_lines {
                break;
            }
            if end - start >= part_bytes {
                parts.push((start, end, start_line));
                start = end;
                start_line = next_line + lines;
            }
        }
        if eof && (lines as usize) < max_lines && end < buf.len() {
            // The last line has no newline.
            end = buf.len();
            lines += 1;
        }
        if end > start {
            parts.push((start, end, start_line));
        }
        carry.extend_from_slice(&buf[end..]);
        buf.truncate(end);
        consumed += end as u64;
        next_line += lines;
        if tx.send(Ok(Block { buf, parts })).is_err() {
            return; // the consumer stopped
        }
        if eof && carry.is_empty() {
            return;
        }
    }
}

/// The size of the next block: `chunk_bytes`; at the start, two parts and then as much as
/// was read before (the cores wait for the first block: 32 MB took ~40 ms to read); and
/// near the end of an input of known size (`total_bytes > 0`) a third of what is left but
/// at least two parts.
fn block_bytes(chunk_bytes: usize, part_bytes: usize, total_bytes: u64, consumed: u64) -> usize {
    let two_parts = part_bytes.saturating_mul(2);
    let mut want = chunk_bytes.min(
        usize::try_from(consumed)
            .unwrap_or(usize::MAX)
            .max(two_parts),
    );
    if total_bytes > 0 {
        let left = usize::try_from(total_bytes.saturating_sub(consumed) / 3).unwrap_or(usize::MAX);
        want = want.min(left.max(two_parts));
    }
    want.max(1)
}

fn count(s: &mut Summary, vins: &mut HashSet<String>, preds: &[Prediction]) {
    s.scored += preds.len() as u64;
    s.alarms += preds.iter().filter(|p| p.alarm).count() as u64;
    for p in preds {
        if !vins.contains(&p.vin) {
            vins.insert(p.vin.clone());
        }
    }
}

/// Every batch line is scored or rejected; for daily and frame input every record was
/// accepted or rejected (the windows are then all scored by construction).
fn check_conservation(s: &Summary, format: InputFormat, input: &Path) -> Result<()> {
    if format == InputFormat::Batch && s.rows_read != s.scored + s.rows_rejected {
        bail!(
            "{}: internal error: read {} lines but scored {} and rejected {}",
            input.display(),
            s.rows_read,
            s.scored,
            s.rows_rejected
        );
    }
    Ok(())
}

/// The text of each rejected line (empty for Parquet input or lines that cannot be read).
fn source_lines(input: &Path, rejects: &[Reject]) -> Vec<String> {
    let mut out = vec![String::new(); rejects.len()];
    if rejects.is_empty() || FileKind::of(input).ok() != Some(FileKind::Csv) {
        return out;
    }
    let mut wanted: Vec<(u64, usize)> = rejects
        .iter()
        .enumerate()
        .map(|(i, r)| (r.line, i))
        .collect();
    wanted.sort();
    let Ok(file) = std::fs::File::open(input) else {
        return out;
    };
    let mut r = std::io::BufReader::new(file);
    let mut line = 0u64;
    let mut buf = Vec::new();
    let mut next = 0;
    while next < wanted.len() {
        buf.clear();
        match r.by_ref().read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => line += 1,
        }
        while next < wanted.len() && wanted[next].0 == line {
            let text = String::from_utf8_lossy(&buf);
            out[wanted[next].1] = text.trim_end_matches(['\n', '\r']).to_owned();
            next += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the reader thread over `text` with tiny limits and returns its blocks.
    fn blocks(text: &[u8], limits: BlockLimits) -> Vec<Block> {
        let (tx, rx) = mpsc::sync_channel(1);
        let (spare_tx, spare_rx) = mpsc::channel();
        let path = Path::new("test.csv");
        std::thread::scope(|s| {
            s.spawn(move || read_blocks(text, path, limits, &tx, &spare_rx));
            let mut out = Vec::new();
            for b in rx {
                let b: Block = b.unwrap();
                assert!(!b.buf.is_empty(), "no empty block");
                // Hand a buffer back, as batch_chunks does, to exercise the reuse.
                let _ = spare_tx.send(Vec::with_capacity(8));
                out.push(b);
            }
            out
        })
    }

    #[test]
    fn blocks_hold_whole_lines_with_their_numbers() {
        // Blank lines, CRLF, a line longer than a block, no newline at the end.
        let mut text = Vec::new();
        for i in 0..200 {
            match i % 17 {
                3 => text.extend_from_slice(b"\n"),
                5 => text.extend_from_slice(b"crlf,1,2\r\n"),
                11 => text.extend_from_slice(format!("long,{}\n", "9".repeat(300)).as_bytes()),
                _ => text.extend_from_slice(format!("v{i},2024-01-01,{i}\n").as_bytes()),
            }
        }
        text.extend_from_slice(b"last,no,newline");
        let total_lines = 201u64;
        let longest_line = text
            .split(|&b| b == b'\n')
            .map(|l| l.len() + 1)
            .max()
            .unwrap();
        for (max_lines, chunk_bytes, part_bytes, total_bytes) in [
            (7, 64, 16, 0),
            (1, 1, 1, 0),
            (1000, 100, 40, 0),
            (1000, 1 << 20, 1 << 20, 0),
            (50, 5000, 1, 0),
            (1000, 1000, 40, text.len() as u64),
            (1000, 1 << 20, 100, text.len() as u64),
            (1000, 1000, 40, 3 * text.len() as u64),
        ] {
            let limits = BlockLimits {
                max_lines,
                chunk_bytes,
                part_bytes,
                total_bytes,
            };
            let bs = blocks(&text, limits);
            let mut joined = Vec::new();
            let mut next_line = 1u64;
            for b in &bs {
                // At most what was wanted, or a line longer than that and what the doubled
                // read after it brought in.
                let want = block_bytes(chunk_bytes, part_bytes, total_bytes, joined.len() as u64);
                assert!(
                    b.buf.len() <= want.max(2 * longest_line),
                    "{limits:?}: a block of {} bytes where {want} were wanted",
                    b.buf.len()
                );
                let mut lines_in_block = 0u64;
                let mut at = 0;
                for &(a, z, line0) in &b.parts {
                    assert_eq!(a, at, "parts are contiguous");
                    assert!(z > a, "no empty part");
                    let part = &b.buf[a..z];
                    assert_eq!(line0, next_line, "{limits:?}: first line number of a part");
                    let n = memchr::memchr_iter(b'\n', part).count() as u64;
                    let n = n + u64::from(!part.ends_with(b"\n"));
                    next_line += n;
                    lines_in_block += n;
                    at = z;
                }
                assert_eq!(at, b.buf.len(), "parts cover the block");
                assert!(lines_in_block as usize <= max_lines, "{limits:?}");
                joined.extend_from_slice(&b.buf);
            }
            assert_eq!(joined, text, "{limits:?}: every byte once, in order");
            assert_eq!(next_line - 1, total_lines, "{limits:?}");
        }
    }
}
