//! `bms predict`: score windows with an ONNX model, from the reference batch CSV, a daily
//! table or raw frames; CSV on stdout, or the durable stores of [`crate::store`] with
//! `--out DIR`.

use std::io::{BufRead, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bms_core::io::batch_csv::{BatchOptions, read_batch_csv_from};
use bms_core::io::{self, AtomicFile, ReadMode, Reject};
use bms_core::model::{ContractSource, Model};
use bms_core::{DailyConfig, DailyTable, FeatureConfig, UtcOffset, WindowKey};
use clap::{Args, ValueEnum};
use ndarray::{Array2, Axis};
use rayon::prelude::*;

use super::daily::ocv_curve;
use super::{FileKind, report_counts};
use crate::store::bulk::BulkWriter;
use crate::store::parquet::PredictionsParquet;
use crate::store::{
    EVENTS_FILE, EventKeys, Prediction, REJECTS_FILE, SQLITE_FILE, SUMMARY_FILE, SqliteStore,
    event_field_names, write_event_json,
};

/// What an input file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Reference batch CSV: no header, `VIN,Date,f1,…,fW` per line.
    Batch,
    /// Daily table, CSV (reference header) or Parquet.
    Daily,
    /// Raw frames, CSV or Parquet.
    Frames,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// ONNX model. Its `bms.*` metadata gives the window layout and threshold; a plain export
    /// gets the reference defaults (14 days × 6 features = 84 values, threshold 0.5).
    #[arg(long, short, env = "BMS_MODEL")]
    pub model: PathBuf,

    /// Input: reference batch CSV (no header, `VIN,Date,f1,…,fW` per line), a daily table
    /// (CSV with the reference header, or Parquet) or frames (CSV or Parquet).
    #[arg(long, short, env = "BMS_INPUT")]
    pub input: PathBuf,

    /// Input format; detected from the extension and the header when absent.
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,

    /// Write the stores into this directory (predictions.parquet, events.jsonl,
    /// results.sqlite, rejects.csv, summary.json) instead of CSV on stdout.
    #[arg(long, short, env = "BMS_OUT")]
    pub out: Option<PathBuf>,

    /// With `--out`: write `predictions/date=YYYY-MM-DD/part-0.parquet` (Hive layout)
    /// instead of one predictions.parquet.
    #[arg(long, value_parser = ["date"], requires = "out")]
    pub partition_by: Option<String>,

    /// Stop at the first bad line instead of setting it aside as a reject.
    #[arg(long)]
    pub strict: bool,

    /// Alarm threshold to use instead of the model's.
    #[arg(long)]
    pub threshold: Option<f32>,

    /// Frames input: offset from UTC where calendar days start, e.g. `+08:00`.
    #[arg(long, default_value = "+00:00", allow_hyphen_values = true)]
    pub utc_offset: String,

    /// Frames input: OCV curve (`nmc`, `lfp` or a `soc,volts` CSV file).
    #[arg(long, default_value = "nmc")]
    pub ocv: String,
}

/// Lines per chunk of a batch CSV: bounds memory (~a few MB of text and features).
const CHUNK_LINES: usize = 32_768;

/// Hidden test hook: lines per chunk instead of [`CHUNK_LINES`] (to test chunk borders).
const CHUNK_HOOK: &str = "BMS_TEST_CHUNK_LINES";

fn chunk_lines() -> usize {
    std::env::var(CHUNK_HOOK)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CHUNK_LINES)
}

/// A frames CSV aggregated in chunks of lines, so memory holds one chunk of frames plus
/// the daily table. Frames must come in time order per vehicle (as loggers write them);
/// `None` when they do not, and the caller reads the whole file and sorts it instead.
fn frames_csv_streaming(options: &RunOptions) -> Result<Option<io::ReadReport<DailyTable>>> {
    let path = &options.input;
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
    let mut agg = bms_core::daily::DailyAggregator::new(options.daily_config.clone());
    let mut read = 0u64;
    let mut accepted = 0u64;
    let mut rejects = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        buf.extend_from_slice(&header);
        let first = line_no + 1;
        let mut n = 0;
        while n < chunk_lines() {
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
            if options.strict {
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
                    eprintln!(
                        "{}, line {line}: frames are not in time order per vehicle; reading the whole file and sorting it",
                        path.display()
                    );
                    return Ok(None);
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

/// Hidden test hook: fail the store writer once more than this many predictions have
/// been written (to prove an interrupted run leaves the previous outputs).
const FAIL_HOOK: &str = "BMS_TEST_FAIL_AFTER_ROWS";

/// Tells a file's format from its extension and first line.
pub fn detect_format(path: &Path) -> Result<InputFormat> {
    match FileKind::of(path)? {
        FileKind::Parquet => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let meta =
                parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&file, Default::default())
                    .with_context(|| format!("{}: not a Parquet file", path.display()))?;
            let schema = meta.schema();
            if schema.index_of("cell_voltages").is_ok() {
                Ok(InputFormat::Frames)
            } else if schema.index_of("VIN").is_ok() && schema.index_of("Date").is_ok() {
                Ok(InputFormat::Daily)
            } else {
                bail!(
                    "{}: Parquet with neither frame columns (cell_voltages) nor daily columns (VIN, Date); use --format",
                    path.display()
                )
            }
        }
        FileKind::Csv => {
            let mut r = std::io::BufReader::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            );
            let mut first = String::new();
            loop {
                first.clear();
                let mut buf = Vec::new();
                if r.read_until(b'\n', &mut buf)? == 0 {
                    bail!("{}: empty file", path.display());
                }
                first.push_str(String::from_utf8_lossy(&buf).trim());
                if !first.is_empty() {
                    break;
                }
            }
            let head = first.to_ascii_lowercase();
            if head.starts_with("vin,date,") {
                Ok(InputFormat::Daily)
            } else if head.starts_with("vin,timestamp,") {
                Ok(InputFormat::Frames)
            } else {
                Ok(InputFormat::Batch)
            }
        }
    }
}

/// Counts and facts of one run, written to `summary.json`.
#[derive(Debug, Clone, Default, serde::Serialize)]
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

/// Options of [`predict_to_dir`] and of the stdout path.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub input: PathBuf,
    pub format: Option<InputFormat>,
    pub out: Option<PathBuf>,
    pub partition_by_date: bool,
    pub strict: bool,
    pub threshold: Option<f32>,
    pub daily_config: DailyConfig,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let model = Model::load(&args.model)?;
    let options = RunOptions {
        input: args.input.clone(),
        format: args.format,
        out: args.out.clone(),
        partition_by_date: args.partition_by.is_some(),
        strict: args.strict,
        threshold: args.threshold,
        daily_config: DailyConfig {
            features: FeatureConfig::new(
                ocv_curve(&args.ocv)?,
                bms_core::features::DEFAULT_ALARM_SPREAD_V,
            )?,
            utc_offset: args.utc_offset.parse::<UtcOffset>()?,
        },
    };
    describe_model(&args.model, &model, options.threshold);
    let summary = run_with_model(&model, &options)?;
    print_summary(&summary, options.out.as_deref());
    Ok(())
}

fn describe_model(path: &Path, model: &Model, threshold: Option<f32>) {
    let contract = model.contract();
    eprintln!(
        "{}: model {} ({}: {} days × {} features = {} values, threshold {})",
        path.display(),
        contract.model_id,
        match contract.source {
            ContractSource::Metadata => "contract from metadata",
            ContractSource::Defaulted => "no bms.* metadata, reference defaults",
        },
        contract.spec.context,
        contract.spec.features.len(),
        model.input_width(),
        threshold.unwrap_or(contract.threshold)
    );
}

/// Prints the short summary on stderr.
pub fn print_summary(s: &Summary, out: Option<&Path>) {
    eprintln!(
        "scored {}, rejected {}, alarms {} (threshold {}; {} vehicles; read {} {}) in {:.2} s{}",
        s.scored,
        s.rows_rejected,
        s.alarms,
        s.threshold,
        s.vehicles,
        s.rows_read,
        match s.format {
            Some(InputFormat::Batch) | None => "lines",
            Some(InputFormat::Daily) => "daily rows",
            Some(InputFormat::Frames) => "frames",
        },
        s.seconds,
        match out {
            Some(dir) => format!(" → {}", dir.display()),
            None => String::new(),
        }
    );
}

/// Windows ready to score, in parts that are scored on separate cores.
struct Chunk {
    parts: Vec<Part>,
}

struct Part {
    keys: Vec<WindowKey>,
    x: Array2<f32>,
}

/// Rows per part when a chunk is cut from an in-memory table.
const PART_ROWS: usize = 4096;

/// Where scored chunks go.
trait Sink {
    fn write(&mut self, preds: Vec<Prediction>) -> Result<()>;
}

/// Scores a chunk's parts on all cores; returns the predictions in input order and, with
/// `with_events`, their event lines (one string per part).
fn score_chunk(
    model: &Model,
    chunk: Chunk,
    threshold: f32,
    keys: &EventKeys,
    with_events: bool,
) -> Result<(Vec<Prediction>, Vec<String>)> {
    let model_id = &model.contract().model_id;
    let scored = chunk
        .parts
        .into_par_iter()
        .map(|part| -> bms_core::Result<(Vec<Prediction>, String)> {
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
            Ok((preds, events))
        })
        .collect::<bms_core::Result<Vec<_>>>()?;
    let mut preds = Vec::with_capacity(scored.iter().map(|s| s.0.len()).sum());
    let mut events = Vec::with_capacity(scored.len());
    for (p, e) in scored {
        preds.extend(p);
        events.push(e);
    }
    Ok((preds, events))
}

/// Reads windows from the input in bounded chunks, handing each to `each`; returns
/// (records read, rejects).
fn for_each_chunk(
    model: &Model,
    options: &RunOptions,
    format: InputFormat,
    progress: &Progress,
    mut each: impl FnMut(Chunk) -> Result<()>,
) -> Result<(u64, Vec<Reject>)> {
    let path = &options.input;
    let mode = if options.strict {
        ReadMode::Strict
    } else {
        ReadMode::Lenient
    };
    let table: DailyTable;
    let (read, rejects) = match format {
        InputFormat::Batch => return batch_chunks(model, options, progress, each),
        InputFormat::Daily => match FileKind::of(path)? {
            FileKind::Csv => {
                let r = io::read_daily_csv(path, mode)?;
                report_counts("daily rows", path, &r);
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
                FileKind::Csv => frames_csv_streaming(options)?,
                FileKind::Parquet => None,
            };
            match streamed {
                Some(r) => {
                    report_counts("frames", path, &r);
                    table = r.data;
                    (r.read, r.rejects)
                }
                None => {
                    let r = match FileKind::of(path)? {
                        FileKind::Csv => io::read_frame_csv(path, mode)?,
                        FileKind::Parquet => io::read_frames_parquet(path, mode)?,
                    };
                    report_counts("frames", path, &r);
                    table = bms_core::daily::aggregate(&r.data, &options.daily_config, Some(path))?;
                    (r.read, r.rejects)
                }
            }
        }
    };
    let spec = &model.contract().spec;
    let batch = bms_core::windows(&table, spec)?;
    progress.set_len(batch.len() as u64);
    let n = batch.len();
    let mut keys = batch.keys.into_iter();
    for (i, x) in batch.x.axis_chunks_iter(Axis(0), chunk_lines()).enumerate() {
        let parts = x
            .axis_chunks_iter(Axis(0), PART_ROWS)
            .map(|x| Part {
                keys: keys.by_ref().take(x.nrows()).collect(),
                x: x.to_owned(),
            })
            .collect();
        progress.inc(x.nrows() as u64);
        each(Chunk { parts })?;
        debug_assert!(i * chunk_lines() < n);
    }
    Ok((read, rejects))
}

/// The batch CSV in chunks of at most [`CHUNK_LINES`] lines (and about [`CHUNK_BYTES`]),
/// read by a thread of its own and parsed on all cores, one part per core at a time.
fn batch_chunks(
    model: &Model,
    options: &RunOptions,
    progress: &Progress,
    mut each: impl FnMut(Chunk) -> Result<()>,
) -> Result<(u64, Vec<Reject>)> {
    let path = &options.input;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    progress.set_len(total_bytes);
    let width = model.input_width();
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
            max_lines: chunk_lines(),
            chunk_bytes: CHUNK_BYTES,
            part_bytes: PART_BYTES,
            total_bytes,
        };
        scope.spawn(move || read_blocks(file, path, limits, &block_tx, &spare_rx));
        for block in block_rx {
            let block = block?;
            progress.inc(block.buf.len() as u64);
            let reports = block
                .parts
                .par_iter()
                .map(|&(a, b, line0)| {
                    read_batch_csv_from(
                        &block.buf[a..b],
                        Some(path),
                        BatchOptions {
                            width,
                            labels: false,
                            mode: ReadMode::Lenient,
                        },
                    )
                    .map(|rep| (rep, line0))
                })
                .collect::<bms_core::Result<Vec<_>>>()?;
            let _ = spare_tx.send(block.buf);
            let mut parts = Vec::with_capacity(reports.len());
            for (rep, line0) in reports {
                read += rep.read;
                for rj in rep.rejects {
                    let line = rj.line + line0 - 1;
                    if options.strict {
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
    Ok((read, rejects))
}

/// Bytes per block read from a batch CSV (whole lines; more when one line is longer).
const CHUNK_BYTES: usize = 32 << 20;
/// Bytes per part of a block, the unit parsed and scored on one core.
const PART_BYTES: usize = 4 << 20;

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

/// A progress bar on a terminal, nothing otherwise.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(enabled: bool) -> Self {
        if enabled && std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent}% {msg}",
            ) {
                bar.set_style(style);
            }
            Progress(Some(bar))
        } else {
            Progress(None)
        }
    }
    fn set_len(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.set_length(n);
        }
    }
    fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// CSV on stdout (the behaviour without `--out`).
struct StdoutSink<W: Write>(W);

impl<W: Write> Sink for StdoutSink<W> {
    fn write(&mut self, preds: Vec<Prediction>) -> Result<()> {
        let mut line = String::new();
        for p in &preds {
            line.clear();
            line.push_str(&format!(
                "{},{},{:?},{}\n",
                p.vin,
                p.date,
                p.predicted_prob,
                u8::from(p.alarm)
            ));
            self.0.write_all(line.as_bytes())?;
        }
        Ok(())
    }
}

/// Messages to the store writer: a scored chunk, or "all read, commit with these rejects".
enum Msg {
    Chunk(Vec<Prediction>),
    /// The rejects, and events.jsonl (written by the reader thread) to move into place.
    Commit(Vec<Reject>, AtomicFile),
}

/// The writer thread: owns the stores, writes every chunk under temporary names and in
/// one SQLite transaction, and moves everything into place only on [`Msg::Commit`]. A
/// channel closed without it (the reader failed) drops everything: nothing changes, and
/// the reader's error is the one reported.
fn write_stores(
    dir: &Path,
    names: &[String],
    options: &RunOptions,
    fail_after: Option<u64>,
    rx: mpsc::Receiver<Msg>,
) -> Result<()> {
    let mut db = SqliteStore::open(&dir.join(SQLITE_FILE))?;
    let mut sink = DirSink {
        parquet: PredictionsParquet::create(dir, names.to_vec(), options.partition_by_date)?,
        sqlite: db.begin()?,
        written: 0,
        fail_after,
    };
    for msg in rx {
        match msg {
            Msg::Chunk(preds) => sink.write(preds)?,
            Msg::Commit(rejects, events) => {
                return commit(dir, sink, events, &rejects, &options.input);
            }
        }
    }
    // The reader failed: drop everything uncommitted; its error is reported.
    Ok(())
}

/// The stores of `--out DIR`, all under temporary names until [`commit`].
struct DirSink<'a> {
    parquet: PredictionsParquet,
    sqlite: crate::store::sqlite::SqliteBatch<'a>,
    written: u64,
    fail_after: Option<u64>,
}

impl Sink for DirSink<'_> {
    fn write(&mut self, preds: Vec<Prediction>) -> Result<()> {
        // Parquet encodes on its own thread while this one fills SQLite (the connection
        // stays on the thread that opened it); the reader thread writes the events.
        let parquet = &mut self.parquet;
        let rows = &preds;
        std::thread::scope(|s| -> Result<()> {
            let pq = s.spawn(move || parquet.write(rows));
            let here = self.sqlite.upsert(rows);
            pq.join().expect("the Parquet writer does not panic")?;
            here
        })?;
        self.written += preds.len() as u64;
        if let Some(n) = self.fail_after
            && self.written > n
        {
            bail!("injected failure after {} rows ({FAIL_HOOK})", self.written);
        }
        Ok(())
    }
}

/// The events thread: writes each chunk's event lines into `events.jsonl`'s temporary
/// file (bypassing the page cache where possible, see [`BulkWriter`]) and hands the file
/// back, complete, for the commit.
fn write_events(events: AtomicFile, rx: mpsc::Receiver<Vec<String>>) -> Result<AtomicFile> {
    let path = events.path().to_path_buf();
    let context = || format!("writing events.jsonl ({})", path.display());
    let mut w = BulkWriter::open(&path, true).with_context(context)?;
    for parts in rx {
        for part in parts {
            w.write_all(part.as_bytes()).with_context(context)?;
        }
    }
    w.finish().with_context(context)?;
    Ok(events)
}

/// Scores `options.input` with `model`: into the stores of `options.out`, or as CSV on
/// stdout when it is `None`. Returns the run's summary after checking conservation.
pub fn run_with_model(model: &Model, options: &RunOptions) -> Result<Summary> {
    let start = Instant::now();
    let contract = model.contract();
    let threshold = options.threshold.unwrap_or(contract.threshold);
    anyhow::ensure!(
        (0.0..=1.0).contains(&threshold),
        "--threshold {threshold} is not a probability between 0 and 1"
    );
    let format = match options.format {
        Some(f) => f,
        None => detect_format(&options.input)?,
    };
    let names = event_field_names(&contract.spec);
    let keys = EventKeys::new(&names);
    let mut summary = Summary {
        input: options.input.display().to_string(),
        format: Some(format),
        model_id: contract.model_id.clone(),
        threshold,
        feature_names: names.clone(),
        fill_value: contract.spec.fill,
        partitioned: options.partition_by_date,
        ..Default::default()
    };
    let progress = Progress::new(options.out.is_some());
    let mut vins = std::collections::HashSet::new();
    let (read, rejects) = match &options.out {
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            writeln!(out, "vin,date,predicted_prob,alarm")?;
            let mut sink = StdoutSink(out);
            let r = for_each_chunk(model, options, format, &progress, |chunk| {
                let (preds, _) = score_chunk(model, chunk, threshold, &keys, false)?;
                count(&mut summary, &mut vins, &preds);
                sink.write(preds)
            })?;
            sink.0.flush()?;
            r
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
            let fail_after = std::env::var(FAIL_HOOK).ok().and_then(|v| v.parse().ok());
            // Scoring on the rayon pool overlaps with two writer threads: the stores
            // (SQLite, Parquet) and the events; this thread hands chunks between them.
            let (tx, rx) = mpsc::sync_channel::<Msg>(2);
            let (ev_tx, ev_rx) = mpsc::sync_channel::<Vec<String>>(2);
            let events = AtomicFile::create(&dir.join(EVENTS_FILE))?;
            std::thread::scope(|scope| -> Result<(u64, Vec<Reject>)> {
                let writer = scope.spawn(|| write_stores(dir, &names, options, fail_after, rx));
                let ev_writer = scope.spawn(move || write_events(events, ev_rx));
                let produced = for_each_chunk(model, options, format, &progress, |chunk| {
                    let (preds, ev) = score_chunk(model, chunk, threshold, &keys, true)?;
                    count(&mut summary, &mut vins, &preds);
                    tx.send(Msg::Chunk(preds))
                        .map_err(|_| anyhow::anyhow!("the store writer stopped"))?;
                    ev_tx
                        .send(ev)
                        .map_err(|_| anyhow::anyhow!("the events writer stopped"))
                });
                drop(ev_tx);
                let events = ev_writer.join().expect("the events writer does not panic");
                // A failed events writer is the cause when the hand-over failed too.
                let produced = match (produced, events) {
                    (Ok(r), Ok(ev)) => Ok((r, ev)),
                    (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
                };
                let produced = produced.and_then(|(r, ev)| {
                    summary.rows_read = r.0;
                    summary.rows_rejected = r.1.len() as u64;
                    check_conservation(&summary, format, options)?;
                    Ok((r, ev))
                });
                let produced = match produced {
                    Ok((r, events)) => {
                        // The writer may have stopped already; its error then says why.
                        let _ = tx.send(Msg::Commit(r.1.clone(), events));
                        Ok(r)
                    }
                    Err(e) => Err(e),
                };
                drop(tx);
                let written = writer.join().expect("the writer thread does not panic");
                // The writer's error is the cause when both failed.
                written?;
                produced
            })?
        }
    };
    progress.finish();
    summary.rows_read = read;
    summary.rows_rejected = rejects.len() as u64;
    summary.vehicles = vins.len() as u64;
    check_conservation(&summary, format, options)?;
    if format == InputFormat::Batch {
        report_counts(
            "lines",
            &options.input,
            &io::ReadReport {
                data: (),
                read,
                accepted: summary.scored,
                rejects,
            },
        );
    }
    summary.seconds = start.elapsed().as_secs_f64();
    if let Some(dir) = &options.out {
        let path = dir.join(SUMMARY_FILE);
        let mut f = AtomicFile::create(&path)?;
        serde_json::to_writer_pretty(f.file(), &summary)?;
        f.file().write_all(b"\n")?;
        f.commit()?;
        readable(&path);
    }
    Ok(summary)
}

fn count(s: &mut Summary, vins: &mut std::collections::HashSet<String>, preds: &[Prediction]) {
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
fn check_conservation(s: &Summary, format: InputFormat, options: &RunOptions) -> Result<()> {
    if format == InputFormat::Batch && s.rows_read != s.scored + s.rows_rejected {
        bail!(
            "{}: internal error: read {} lines but scored {} and rejected {}",
            options.input.display(),
            s.rows_read,
            s.scored,
            s.rows_rejected
        );
    }
    Ok(())
}

/// Moves every store into place: the SQLite commit while Parquet's footer is written and
/// synced and events.jsonl is synced (each its own file: waiting for one fsync after the
/// other was a serial tail of ~0.1 s on 200,000 rows), then rejects. Each file is renamed
/// only once complete and synced.
fn commit(
    dir: &Path,
    sink: DirSink<'_>,
    events: AtomicFile,
    rejects: &[Reject],
    input: &Path,
) -> Result<()> {
    let sources = source_lines(input, rejects);
    let mut f = AtomicFile::create(&dir.join(REJECTS_FILE))?;
    {
        let mut w = f.writer();
        writeln!(w, "line,reason,source")?;
        for (r, src) in rejects.iter().zip(&sources) {
            writeln!(w, "{},{},{}", r.line, csv_text(&r.reason), csv_text(src))?;
        }
        w.flush()?;
    }
    let DirSink {
        parquet, sqlite, ..
    } = sink;
    std::thread::scope(|s| -> Result<()> {
        let parquet = s.spawn(move || parquet.finish());
        let events = s.spawn(move || events.commit());
        let db = sqlite.commit();
        parquet.join().expect("the Parquet writer does not panic")?;
        events
            .join()
            .expect("committing events.jsonl does not panic")?;
        db
    })?;
    f.commit()?;
    for name in [EVENTS_FILE, REJECTS_FILE, crate::store::PARQUET_FILE] {
        readable(&dir.join(name));
    }
    Ok(())
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

fn csv_text(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
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
