//! `bms evaluate`: predictions against what the BMS did — window metrics and, per vehicle,
//! days of warning before the first alarm (SPEC §9). The files are read and the figures
//! shown by [`bms_batch::evaluate`], as `bms.evaluate` does.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use bms_batch::evaluate::{
    LabelFiles, config, evaluate_scores, read_labels, read_scores, render_text, to_json,
};
use bms_core::io;

use super::is_stdio;

/// Where the labels come from: exactly one of these.
#[derive(Debug, Clone, Default, Args)]
#[group(multiple = false)]
pub struct LabelArgs {
    /// A daily table (CSV or Parquet) with the `Label` column: every alarm day.
    #[arg(long, value_name = "FILE")]
    pub daily: Option<PathBuf>,
    /// The simulator's truth file (`bms simulate --truth`): each vehicle's first alarm day.
    /// Windows dated after a vehicle's first alarm have no label (the file does not list
    /// later alarm days) and count in the event metrics only.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Labelled windows (`bms windows --labels`): window metrics only.
    #[arg(long, value_name = "FILE")]
    pub windows: Option<PathBuf>,
}

impl LabelArgs {
    pub fn given(&self) -> bool {
        self.daily.is_some() || self.truth.is_some() || self.windows.is_some()
    }

    pub fn files(&self) -> LabelFiles {
        LabelFiles {
            daily: self.daily.clone(),
            truth: self.truth.clone(),
            windows: self.windows.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Predictions: a `bms predict --out` directory (its threshold and horizon are used
    /// unless given), or `bms predict`'s CSV (`vin,date,predicted_prob,…`; `-` for stdin).
    pub predictions: PathBuf,

    #[command(flatten)]
    pub labels: LabelArgs,

    /// Alert threshold. Default: the run's (summary.json) or the model's (--model).
    #[arg(long)]
    pub threshold: Option<f32>,

    /// Days a window's label looks ahead. Default: the run's or the model's, else 14.
    #[arg(long)]
    pub horizon: Option<u32>,

    /// Take the threshold and horizon from this model's contract.
    #[arg(long, short, value_name = "MODEL.onnx")]
    pub model: Option<PathBuf>,

    /// Write the evaluation as JSON here (`-`: standard output, the text then goes to
    /// standard error).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: EvaluateArgs) -> Result<()> {
    if !args.labels.given() {
        bail!("no labels: give --daily FILE, --truth FILE or --windows FILE");
    }
    let scores = read_scores(&args.predictions)?;
    let cfg = config(
        args.threshold,
        args.horizon,
        args.model.as_deref(),
        scores.summary.as_ref(),
    )?;
    let labels = read_labels(&args.labels.files())?;
    let e = evaluate_scores(&scores.rows, &labels, &cfg)?;
    let text = render_text(&e);
    match &args.json {
        Some(path) if is_stdio(path) => {
            eprint!("{text}");
            super::write_out(
                path,
                |_| Ok(()),
                |w| std::io::Write::write_all(w, to_json(&e).as_bytes()),
            )?;
        }
        Some(path) => {
            super::ensure_parent(path)?;
            let mut f = io::AtomicFile::create(path)?;
            std::io::Write::write_all(f.file(), to_json(&e).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            f.commit()?;
            print!("{text}");
            eprintln!("{}: evaluation written", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
