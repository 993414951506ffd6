//! `bms predict`: score the reference batch CSV with an ONNX model.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use bms_core::io::ReadMode;
use bms_core::io::batch_csv::{BatchOptions, read_batch_csv};
use bms_core::model::{ContractSource, Model};
use clap::Args;

use super::report_counts;

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// ONNX model. Its `bms.*` metadata gives the input width and threshold; a plain export
    /// gets the reference defaults (14 days × 6 features = 84 values, threshold 0.5).
    #[arg(long, short, env = "BMS_MODEL")]
    pub model: PathBuf,

    /// Reference batch CSV: no header, one `VIN,Date,f1,…,fW` line per window (what
    /// `bms windows` writes without `--labels`).
    #[arg(long, short, env = "BMS_INPUT")]
    pub input: PathBuf,

    /// Stop at the first bad line instead of reporting it on stderr and going on.
    #[arg(long)]
    pub strict: bool,

    /// Alarm threshold to use instead of the model's.
    #[arg(long)]
    pub threshold: Option<f32>,
}

/// Rows scored per model call: bounds memory for the probabilities' temporary copies.
const CHUNK: usize = 16_384;

pub fn run(args: PredictArgs) -> Result<()> {
    let model = Model::load(&args.model)?;
    let contract = model.contract();
    let threshold = args.threshold.unwrap_or(contract.threshold);
    anyhow::ensure!(
        (0.0..=1.0).contains(&threshold),
        "--threshold {threshold} is not a probability between 0 and 1"
    );
    eprintln!(
        "{}: model {} ({}: {} days × {} features = {} values, threshold {threshold})",
        args.model.display(),
        contract.model_id,
        match contract.source {
            ContractSource::Metadata => "contract from metadata",
            ContractSource::Defaulted => "no bms.* metadata, reference defaults",
        },
        contract.spec.context,
        contract.spec.features.len(),
        model.input_width(),
    );
    let report = read_batch_csv(
        &args.input,
        BatchOptions {
            width: model.input_width(),
            labels: false,
            mode: if args.strict {
                ReadMode::Strict
            } else {
                ReadMode::Lenient
            },
        },
    )?;
    report_counts("lines", &args.input, &report);
    let data = &report.data;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    writeln!(out, "vin,date,predicted_prob,alarm")?;
    let mut scored = 0u64;
    let mut alarms = 0u64;
    let mut line = String::new();
    for start in (0..data.keys.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(data.keys.len());
        let probs = model
            .predict(data.x.slice(ndarray::s![start..end, ..]))
            .with_context(|| {
                format!(
                    "scoring lines {}..{}",
                    data.lines[start],
                    data.lines[end - 1]
                )
            })?;
        for (k, &p) in data.keys[start..end].iter().zip(probs.iter()) {
            let alarm = p >= threshold;
            alarms += u64::from(alarm);
            line.clear();
            line.push_str(&format!("{},{},{p:?},{}\n", k.vin, k.date, u8::from(alarm)));
            out.write_all(line.as_bytes())?;
        }
        scored += (end - start) as u64;
    }
    out.flush()?;
    let rejected = report.rejects.len() as u64;
    anyhow::ensure!(
        report.read == scored + rejected,
        "internal error: read {} lines but scored {scored} and rejected {rejected}",
        report.read
    );
    eprintln!("scored {scored}, rejected {rejected}, alarms {alarms}");
    Ok(())
}
