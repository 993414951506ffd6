//! `bms predict`: score windows with an ONNX model, from the reference batch CSV, a daily
//! table or raw frames; CSV on stdout, or the durable stores of [`bms_batch::StoreDir`]
//! with `--out DIR`. The pipeline is [`bms_batch::score`]; this module parses arguments,
//! draws the progress bar and prints counts.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Result;
use bms_batch::{
    CsvSink, InputFormat, Job, Observer, ReadCounts, Summary, ocv_curve, score, score_to_dir,
};
use bms_core::model::{ContractSource, Model};
use bms_core::{DailyConfig, FeatureConfig, UtcOffset};
use clap::Args;

use super::report_counts;

/// `--format`: the library's format names, listed in `--help`.
fn format_parser() -> impl clap::builder::TypedValueParser<Value = InputFormat> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(InputFormat::ALL.map(|f| f.name()))
        .map(|s| s.parse::<InputFormat>().expect("a listed format name"))
}

#[derive(Debug, Args)]
// `--threshold -1` is a value to refuse with the flag named, not an unknown flag `-1`.
#[command(allow_negative_numbers = true)]
pub struct PredictArgs {
    /// ONNX model. Its `bms.*` metadata gives the window layout and threshold; a plain export
    /// gets the reference defaults (14 days × 6 features = 84 values, threshold 0.5).
    #[arg(long, short, env = "BMS_MODEL")]
    pub model: PathBuf,

    /// Input: reference batch CSV (no header, `VIN,Date,f1,…,fW` per line), a daily table
    /// (CSV with the reference header, or Parquet) or frames (CSV or Parquet). `-` reads
    /// CSV from standard input (kept in a temporary file `stdin.csv` while the run lasts:
    /// rejects are listed with their text, which needs a second read).
    #[arg(long, short, env = "BMS_INPUT")]
    pub input: PathBuf,

    /// Input format; detected from the extension and the header when absent.
    #[arg(long, value_parser = format_parser())]
    pub format: Option<InputFormat>,

    /// Write the stores into this directory (predictions.parquet, events.jsonl,
    /// results.sqlite, rejects.csv, summary.json) instead of CSV on stdout.
    #[arg(long, env = "BMS_OUT", value_name = "DIR", conflicts_with = "output")]
    pub out: Option<PathBuf>,

    /// Write the predictions CSV (`vin,date,predicted_prob,alarm`) to this `.csv` file
    /// instead of standard output (`-`), like `-o` of `bms daily` and `bms windows`;
    /// written whole or not at all. The stores go to `--out DIR`.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

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

/// Hidden test hook: lines per chunk instead of [`bms_batch::pipeline::CHUNK_LINES`] (to
/// test chunk borders).
const CHUNK_HOOK: &str = "BMS_TEST_CHUNK_LINES";
/// Hidden test hook: fail the run once more than this many predictions were written (to
/// prove an interrupted run leaves the previous outputs).
const FAIL_HOOK: &str = "BMS_TEST_FAIL_AFTER_ROWS";

/// The job `args` describe, with the hidden test hooks read once.
fn job(args: &PredictArgs) -> Result<Job> {
    let mut job = Job {
        format: args.format,
        strict: args.strict,
        threshold: args.threshold,
        daily_config: DailyConfig {
            features: FeatureConfig::new(
                ocv_curve(&args.ocv)?,
                bms_core::features::DEFAULT_ALARM_SPREAD_V,
            )?,
            utc_offset: args.utc_offset.parse::<UtcOffset>()?,
        },
        partition_by_date: args.partition_by.is_some(),
        ..Job::default()
    };
    if let Some(n) = hook(CHUNK_HOOK).filter(|&n| n > 0) {
        job.chunk_lines = n as usize;
    }
    job.fail_after_rows = hook(FAIL_HOOK);
    Ok(job)
}

fn hook(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

pub fn run(args: PredictArgs) -> Result<()> {
    let output = args.output.as_deref().filter(|o| !super::is_stdio(o));
    if let Some(o) = output {
        anyhow::ensure!(
            o.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")),
            "-o {}: the predictions CSV needs a name ending in .csv (the stores go to --out DIR)",
            o.display()
        );
        super::check_outputs([o])?;
    }
    if let Some(out) = &args.out {
        anyhow::ensure!(
            !super::is_stdio(out),
            "--out takes a directory for the stores; without --out, the predictions go to standard output as CSV"
        );
    }
    let model = Model::load(&args.model)?;
    let job = job(&args)?;
    describe_model(&args.model, &model, job.threshold);
    let spooled = if super::is_stdio(&args.input) {
        Some(spool_stdin()?)
    } else {
        None
    };
    let input = match &spooled {
        Some(dir) => dir.path().join(STDIN_FILE),
        None => args.input.clone(),
    };
    let summary = match output {
        Some(file) => predict_to_file(&model, &input, &job, file)?,
        None => run_with_model(&model, &input, &job, args.out.as_deref())?,
    };
    print_summary(&summary, args.out.as_deref());
    // A run that scored nothing because everything was rejected has not done its job,
    // whatever the stores say: the wrong file, the wrong format or the wrong model.
    if summary.scored == 0
        && summary.rows_rejected > 0
        && summary.rows_rejected == summary.rows_read
    {
        let looks = bms_batch::input::describe_first_line(&input, model.input_width())
            .map(|d| format!("; {d}"))
            .unwrap_or_default();
        anyhow::bail!(
            "{}: every one of its {} {} was rejected (reasons above{}){looks}; is it the right file, --format and model?",
            args.input.display(),
            summary.rows_read,
            summary.format.unwrap_or(InputFormat::Batch).records(),
            match &args.out {
                Some(dir) => format!(
                    ", and in {}",
                    dir.join(bms_batch::store::REJECTS_FILE).display()
                ),
                None => String::new(),
            }
        );
    }
    Ok(())
}

/// The name standard input is kept under while a run reads it.
const STDIN_FILE: &str = "stdin.csv";

/// Copies standard input into `stdin.csv` in a new temporary directory.
fn spool_stdin() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("bms-stdin-")
        .tempdir()
        .map_err(|e| anyhow::anyhow!("cannot create a temporary directory for <stdin>: {e}"))?;
    let path = dir.path().join(STDIN_FILE);
    let mut file =
        std::fs::File::create(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file)
        .map_err(|e| anyhow::anyhow!("reading <stdin> into {}: {e}", path.display()))?;
    Ok(dir)
}

/// Scores `input` into the stores of `out`, or as CSV on stdout when it is `None`, with a
/// progress bar (for `--out`, on a terminal) and counts on stderr.
pub fn run_with_model(
    model: &Model,
    input: &Path,
    job: &Job,
    out: Option<&Path>,
) -> Result<Summary> {
    let progress = Progress::new(out.is_some());
    match out {
        None => {
            let stdout = std::io::stdout();
            let sink = CsvSink::new(std::io::BufWriter::new(stdout.lock()))?;
            score(input, model, job, Box::new(sink), &progress)
        }
        Some(dir) => score_to_dir(input, model, job, dir, &progress),
    }
}

/// Scores `input` into the predictions CSV `file`, which appears only once complete.
fn predict_to_file(model: &Model, input: &Path, job: &Job, file: &Path) -> Result<Summary> {
    super::ensure_parent(file)?;
    let mut out = bms_core::io::AtomicFile::create(file)?;
    let summary = {
        let sink = CsvSink::new(std::io::BufWriter::new(out.file()))?;
        score(input, model, job, Box::new(sink), &Progress::new(false))?
    };
    out.commit()?;
    Ok(summary)
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
        s.format.unwrap_or(InputFormat::Batch).records(),
        s.seconds,
        match out {
            Some(dir) => format!(" → {}", dir.display()),
            None => String::new(),
        }
    );
    if let Some(e) = &s.evaluation {
        let f = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
        eprintln!(
            "labelled {} ({} positive): ROC AUC {}, average precision {}; precision {}, recall {} and F1 {} at threshold {}",
            e.labelled,
            e.positives,
            f(e.roc_auc),
            f(e.average_precision),
            f(e.precision),
            f(e.recall),
            f(e.f1),
            s.threshold
        );
    }
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

impl Observer for Progress {
    fn total(&self, n: u64) {
        self.set_len(n);
    }
    fn advance(&self, n: u64) {
        self.inc(n);
    }
    fn counts(&self, input: &Path, counts: &ReadCounts<'_>) {
        report_counts(input, counts);
    }
    fn notice(&self, input: &Path, message: &str) {
        eprintln!("{}, {message}", input.display());
    }
    fn finished(&self) {
        self.finish();
    }
}
