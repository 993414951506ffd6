//! `bms serve`: flags and environment → [`crate::serve::ServeConfig`], model discovery,
//! the runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bms_core::model::{ContractSource, Model};
use clap::Args;

use crate::serve::{self, ServeConfig};

#[derive(Debug, Args)]
// `--threshold -1` is a value to refuse with the flag named, not an unknown flag `-1`.
#[command(allow_negative_numbers = true)]
pub struct ServeArgs {
    /// ONNX model to serve. Without it, the single `.onnx` file under --model-dir.
    #[arg(long, short, env = "BMS_MODEL")]
    pub model: Option<PathBuf>,

    /// Directory searched (two levels deep) for the model when --model is not given;
    /// SageMaker unpacks the model archive here.
    #[arg(long, env = "BMS_MODEL_DIR", default_value = "/opt/ml/model")]
    pub model_dir: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "BMS_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on; 0 picks a free port (the bound address is printed on stderr).
    #[arg(long, env = "SAGEMAKER_BIND_TO_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Largest request body, in MiB (1–100): 6 for real-time endpoints, up to 100 for
    /// batch transform. Also reported by /execution-parameters.
    #[arg(long, env = "SAGEMAKER_MAX_PAYLOAD_IN_MB", default_value_t = 6,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_payload_mb: u32,

    /// Seconds allowed to read a request and to answer it. Default 60, or 600 when
    /// SAGEMAKER_BATCH=true (the limits SageMaker applies).
    #[arg(long, env = "BMS_TIMEOUT_SECS")]
    pub timeout_secs: Option<f64>,

    /// Scoring requests handled at once; more are answered 429 Too Many Requests.
    #[arg(long, env = "BMS_MAX_INFLIGHT", default_value_t = 64)]
    pub max_inflight: usize,

    /// Threads that score request bodies (default: the number of CPUs).
    #[arg(long, env = "BMS_WORKERS")]
    pub workers: Option<usize>,

    /// A body up to this many bytes is scored on the thread that read it instead of the
    /// worker pool when no other scoring request is in flight. Off (0) by default: it
    /// serves one client ~15 % faster but gave p99 tails of 1–3 ms with 8 clients
    /// (benches/RESULTS.md); 8192 (a few lines) suits a single client.
    #[arg(long, env = "BMS_INLINE_MAX_BYTES", default_value_t = 0)]
    pub inline_max_bytes: usize,

    /// Seconds to wait for in-flight requests after SIGTERM/SIGINT.
    #[arg(long, env = "BMS_DRAIN_SECS", default_value_t = 25.0)]
    pub drain_secs: f64,

    /// Alarm threshold for /v1/predict instead of the model's.
    #[arg(long)]
    pub threshold: Option<f32>,

    /// Also record every prediction that has a key (/v1/predict, and /invocations lines
    /// in the reference `VIN,Date,…` format) in DIR: `results.sqlite` (upsert by event id)
    /// and `events.jsonl`, the stores `bms predict --out` writes. Written in batches by a
    /// background thread; everything queued is written before a graceful exit.
    #[arg(long, env = "BMS_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// Predictions allowed to wait for the store writer; beyond, scoring requests get 503.
    #[arg(long, default_value_t = 1_000_000)]
    pub store_max_queued: usize,

    /// Serve HTTPS: PEM certificate chain (leaf first). With --tls-key.
    #[arg(long, env = "BMS_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "BMS_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require `Authorization: Bearer TOKEN` on every route but /ping, TOKEN one of the
    /// file's lines (blank lines and # comments skipped; 16–4096 printable characters).
    /// Without it, the env var BMS_AUTH_TOKEN can give one token. A request without a
    /// valid token gets 401 and nothing else; tokens are never logged.
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
}

/// The single `.onnx` file in `dir` or its subdirectories (two levels).
fn find_model(dir: &Path) -> Result<PathBuf> {
    /// Collects `.onnx` files two levels deep; a symlink is followed only when it leads to
    /// a place inside `root` (the directory's real path), else listed in `outside`.
    fn walk(
        root: &Path,
        dir: &Path,
        depth: usize,
        found: &mut Vec<PathBuf>,
        outside: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let target = if entry.file_type()?.is_symlink() {
                match std::fs::canonicalize(&path) {
                    Ok(t) if t.starts_with(root) => t,
                    _ => {
                        outside.push(path);
                        continue;
                    }
                }
            } else {
                path.clone()
            };
            if target.is_dir() {
                if depth > 0 {
                    walk(root, &path, depth - 1, found, outside)?;
                }
            } else if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
            {
                found.push(path);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    let mut outside = Vec::new();
    let read =
        std::fs::canonicalize(dir).and_then(|root| walk(&root, dir, 2, &mut found, &mut outside));
    read.with_context(|| {
        format!(
            "no --model given and cannot read the model directory {}",
            dir.display()
        )
    })?;
    if found.is_empty() && !outside.is_empty() {
        anyhow::bail!(
            "no --model given and no .onnx file under {} (symlinks that lead out of it are not \
             followed: {})",
            dir.display(),
            outside
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    found.sort();
    match found.len() {
        1 => Ok(found.pop().expect("one")),
        0 => anyhow::bail!("no --model given and no .onnx file under {}", dir.display()),
        _ => anyhow::bail!(
            "no --model given and {} .onnx files under {} ({}); name one with --model",
            found.len(),
            dir.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn batch_mode() -> bool {
    std::env::var("SAGEMAKER_BATCH").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The longest timeout or drain accepted: a week (far beyond any use; timers and clocks
/// overflow on durations like 1e300 s, which must be refused, not panic).
const MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

pub fn run(args: ServeArgs) -> Result<()> {
    let path = match &args.model {
        Some(m) => m.clone(),
        None => find_model(&args.model_dir)?,
    };
    let model = Model::load(&path)?;
    model
        .require_probability()
        .with_context(|| path.display().to_string())?;
    let contract = model.contract();
    let threshold = args.threshold.unwrap_or(contract.threshold);
    anyhow::ensure!(
        (0.0..=1.0).contains(&threshold),
        "--threshold {threshold} is not a probability between 0 and 1"
    );
    let timeout = args
        .timeout_secs
        .unwrap_or(if batch_mode() { 600.0 } else { 60.0 });
    anyhow::ensure!(
        timeout > 0.0 && timeout <= MAX_SECS,
        "--timeout-secs {timeout} must be a positive number of seconds, at most {MAX_SECS} (a week)"
    );
    anyhow::ensure!(
        (0.0..=MAX_SECS).contains(&args.drain_secs),
        "--drain-secs {} must be zero or more seconds, at most {MAX_SECS} (a week)",
        args.drain_secs
    );
    anyhow::ensure!(args.max_inflight >= 1, "--max-inflight must be at least 1");
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::gateway::tls::server_config(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let tokens = match (&args.auth_token_file, std::env::var("BMS_AUTH_TOKEN")) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --auth-token-file {}", file.display()))?;
            Some(
                serve::Tokens::parse(&text)
                    .with_context(|| format!("--auth-token-file {}", file.display()))?,
            )
        }
        (None, Ok(token)) => Some(serve::Tokens::parse(&token).context("BMS_AUTH_TOKEN")?),
        (None, Err(_)) => None,
    };
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = args.workers.unwrap_or(cpus);
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");
    eprintln!(
        "bms serve: model {} from {} ({}, {} values per row, threshold {threshold})",
        contract.model_id,
        path.display(),
        match contract.source {
            ContractSource::Metadata => "contract from metadata",
            ContractSource::Defaulted => "no bms.* metadata, reference defaults",
        },
        model.input_width(),
    );
    let config = ServeConfig {
        host: args.host,
        port: args.port,
        max_body: args.max_payload_mb as usize * 1024 * 1024,
        max_payload_mb: args.max_payload_mb,
        timeout: Duration::from_secs_f64(timeout),
        max_inflight: args.max_inflight,
        workers,
        inline_max_bytes: args.inline_max_bytes,
        drain: Duration::from_secs_f64(args.drain_secs),
        threshold,
        store: args.store,
        store_max_queued: args.store_max_queued,
        tls,
        tokens,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .max_blocking_threads(workers)
        .thread_name("bms-serve")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let served = runtime.block_on(serve::run(Arc::new(model), config, |addr| {
        eprintln!("bms serve: listening on {scheme}://{addr}");
    }));
    // Scoring abandoned by a request that timed out may still run on a worker thread.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    eprintln!("bms serve: stopped");
    Ok(())
}
