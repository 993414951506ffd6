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
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use super::daily::ocv_curve;
use super::{FileKind, report_counts};
use crate::store::parquet::PredictionsParquet;
use crate::store::{
    EVENTS_FILE, Prediction, REJECTS_FILE, SQLITE_FILE, SUMMARY_FILE, SqliteStore,
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
        "read {} {}, rejected {}, scored {} windows of {} vehicles, {} alarms (threshold {}) in {:.2} s{}",
        s.rows_read,
        match s.format {
            Some(InputFormat::Batch) | None => "lines",
            Some(InputFormat::Daily) => "daily rows",
            Some(InputFormat::Frames) => "frames",
        },
        s.rows_rejected,
        s.scored,
        s.vehicles,
        s.alarms,
        s.threshold,
        s.seconds,
        match out {
            Some(dir) => format!(" → {}", dir.display()),
            None => String::new(),
        }
    );
}

/// A chunk of windows ready to score.
struct Chunk {
    keys: Vec<WindowKey>,
    x: Array2<f32>,
}

/// Where scored chunks go.
trait Sink {
    fn write(&mut self, preds: Vec<Prediction>, events: String) -> Result<()>;
}

/// Scores a chunk on all cores and builds its predictions and event lines.
fn score_chunk(
    model: &Model,
    chunk: Chunk,
    threshold: f32,
    names: &[String],
    with_events: bool,
) -> Result<(Vec<Prediction>, String)> {
    const PART: usize = 4096;
    let n = chunk.keys.len();
    let parts: Vec<ArrayView2<f32>> = chunk.x.axis_chunks_iter(Axis(0), PART).collect();
    let probs: Vec<Vec<f32>> = parts
        .par_iter()
        .map(|v| model.predict(v.view()).map(|p| p.to_vec()))
        .collect::<bms_core::Result<_>>()?;
    let probs: Vec<f32> = probs.into_iter().flatten().collect();
    debug_assert_eq!(probs.len(), n);
    let model_id = &model.contract().model_id;
    let preds: Vec<Prediction> = chunk
        .keys
        .into_par_iter()
        .zip(probs.into_par_iter())
        .enumerate()
        .map(|(i, (k, p))| {
            Prediction::new(
                &k.vin,
                k.date,
                p,
                threshold,
                model_id,
                chunk.x.row(i).to_vec(),
            )
        })
        .collect();
    let events = if with_events {
        preds
            .par_chunks(2048)
            .map(|ps| {
                let mut s = String::with_capacity(ps.len() * 2048);
                for p in ps {
                    write_event_json(&mut s, p, names);
                    s.push('\n');
                }
                s
            })
            .collect::<Vec<String>>()
            .concat()
    } else {
        String::new()
    };
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
            let r = match FileKind::of(path)? {
                FileKind::Csv => io::read_frame_csv(path, mode)?,
                FileKind::Parquet => io::read_frames_parquet(path, mode)?,
            };
            report_counts("frames", path, &r);
            table = bms_core::daily::aggregate(&r.data, &options.daily_config, Some(path))?;
            (r.read, r.rejects)
        }
    };
    let spec = &model.contract().spec;
    let batch = bms_core::windows(&table, spec)?;
    progress.set_len(batch.len() as u64);
    let n = batch.len();
    let mut keys = batch.keys.into_iter();
    for (i, x) in batch.x.axis_chunks_iter(Axis(0), CHUNK_LINES).enumerate() {
        let k: Vec<WindowKey> = keys.by_ref().take(x.nrows()).collect();
        progress.inc(k.len() as u64);
        each(Chunk {
            keys: k,
            x: x.to_owned(),
        })?;
        debug_assert!(i * CHUNK_LINES < n);
    }
    Ok((read, rejects))
}

/// The batch CSV in chunks of [`CHUNK_LINES`] lines, parsed on all cores.
fn batch_chunks(
    model: &Model,
    options: &RunOptions,
    progress: &Progress,
    mut each: impl FnMut(Chunk) -> Result<()>,
) -> Result<(u64, Vec<Reject>)> {
    let path = &options.input;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    progress.set_len(file.metadata().map(|m| m.len()).unwrap_or(0));
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let width = model.input_width();
    let mut read = 0u64;
    let mut rejects = Vec::new();
    let mut first_line = 1u64; // physical line number of the chunk's first line
    let mut buf: Vec<u8> = Vec::new();
    loop {
        buf.clear();
        // Line starts within buf, to cut it into parts for the cores.
        let mut starts = Vec::with_capacity(CHUNK_LINES);
        for _ in 0..CHUNK_LINES {
            let at = buf.len();
            let n = r
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            starts.push(at);
        }
        if starts.is_empty() {
            break;
        }
        progress.inc(buf.len() as u64);
        let lines = starts.len();
        let per = lines
            .div_ceil(rayon::current_num_threads().max(1) * 2)
            .max(1);
        let parts: Vec<(usize, usize, u64)> = (0..lines)
            .step_by(per)
            .map(|a| {
                let b = (a + per).min(lines);
                let end = if b < lines { starts[b] } else { buf.len() };
                (starts[a], end, first_line + a as u64)
            })
            .collect();
        let reports = parts
            .par_iter()
            .map(|&(a, b, line0)| {
                read_batch_csv_from(
                    &buf[a..b],
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
        let mut keys = Vec::new();
        let mut xs: Vec<ArrayView2<f32>> = Vec::new();
        for (rep, line0) in &reports {
            read += rep.read;
            for rj in &rep.rejects {
                let line = rj.line + line0 - 1;
                if options.strict {
                    bail!("{}, line {line}: {}", path.display(), rj.reason);
                }
                rejects.push(Reject {
                    line,
                    reason: rj.reason.clone(),
                });
            }
        }
        for (rep, _) in &reports {
            keys.extend(rep.data.keys.iter().cloned());
            xs.push(rep.data.x.view());
        }
        let x = ndarray::concatenate(Axis(0), &xs).expect("same width");
        first_line += lines as u64;
        if !keys.is_empty() {
            each(Chunk { keys, x })?;
        }
    }
    Ok((read, rejects))
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
    fn write(&mut self, preds: Vec<Prediction>, _events: String) -> Result<()> {
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
    Chunk(Vec<Prediction>, String),
    Commit(Vec<Reject>),
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
        events: AtomicFile::create(&dir.join(EVENTS_FILE))?,
        sqlite: db.begin()?,
        written: 0,
        fail_after,
    };
    for msg in rx {
        match msg {
            Msg::Chunk(preds, events) => sink.write(preds, events)?,
            Msg::Commit(rejects) => return commit(dir, sink, &rejects, &options.input),
        }
    }
    // The reader failed: drop everything uncommitted; its error is reported.
    Ok(())
}

/// The stores of `--out DIR`, all under temporary names until [`commit`].
struct DirSink<'a> {
    parquet: PredictionsParquet,
    events: AtomicFile,
    sqlite: crate::store::sqlite::SqliteBatch<'a>,
    written: u64,
    fail_after: Option<u64>,
}

impl Sink for DirSink<'_> {
    fn write(&mut self, preds: Vec<Prediction>, events: String) -> Result<()> {
        self.parquet.write(&preds)?;
        self.events
            .file()
            .write_all(events.as_bytes())
            .context("writing events.jsonl")?;
        self.sqlite.upsert(&preds)?;
        self.written += preds.len() as u64;
        if let Some(n) = self.fail_after
            && self.written > n
        {
            bail!("injected failure after {} rows ({FAIL_HOOK})", self.written);
        }
        Ok(())
    }
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
    let mut summary = Summary {
        input: options.input.display().to_string(),
        format: Some(format),
        model_id: contract.model_id.clone(),
        threshold,
        feature_names: names.clone(),
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
                let (preds, ev) = score_chunk(model, chunk, threshold, &names, false)?;
                count(&mut summary, &mut vins, &preds);
                sink.write(preds, ev)
            })?;
            sink.0.flush()?;
            r
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
            let fail_after = std::env::var(FAIL_HOOK).ok().and_then(|v| v.parse().ok());
            // Scoring on the rayon pool overlaps with the writer thread.
            let (tx, rx) = mpsc::sync_channel::<Msg>(2);
            std::thread::scope(|scope| -> Result<(u64, Vec<Reject>)> {
                let writer = scope.spawn(|| write_stores(dir, &names, options, fail_after, rx));
                let produced = for_each_chunk(model, options, format, &progress, |chunk| {
                    let (preds, ev) = score_chunk(model, chunk, threshold, &names, true)?;
                    count(&mut summary, &mut vins, &preds);
                    tx.send(Msg::Chunk(preds, ev))
                        .map_err(|_| anyhow::anyhow!("the store writer stopped"))
                });
                let produced = produced.and_then(|r| {
                    summary.rows_read = r.0;
                    summary.rows_rejected = r.1.len() as u64;
                    check_conservation(&summary, format, options)?;
                    Ok(r)
                });
                let produced = match produced {
                    Ok(r) => {
                        // The writer may have stopped already; its error then says why.
                        let _ = tx.send(Msg::Commit(r.1.clone()));
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
    summary.seconds = start.elapsed().as_secs_f64();
    if let Some(dir) = &options.out {
        let path = dir.join(SUMMARY_FILE);
        let mut f = AtomicFile::create(&path)?;
        serde_json::to_writer_pretty(f.file(), &summary)?;
        f.file().write_all(b"\n")?;
        f.commit()?;
        readable(&path);
    } else if !rejects.is_empty() {
        for r in rejects.iter().take(20) {
            eprintln!("  line {}: {}", r.line, r.reason);
        }
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

/// Moves every store into place: Parquet, events, rejects, then the SQLite commit.
fn commit(dir: &Path, sink: DirSink<'_>, rejects: &[Reject], input: &Path) -> Result<()> {
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
    sink.parquet.finish()?;
    sink.events.commit()?;
    f.commit()?;
    sink.sqlite.commit()?;
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
