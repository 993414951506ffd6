//! `bms gateway`: flags → [`crate::gateway::GatewayConfig`], the registry file, the runtime.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bms_batch::ocv_curve;
use bms_core::model::Model;
use bms_core::{DailyConfig, FeatureConfig, UtcOffset};
use clap::Args;

use crate::gateway::{self, GatewayConfig};

/// Flags of `bms gateway` (its help text is on [`super::Command::Gateway`]).
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct GatewayArgs {
    /// Address to listen on for vehicles, e.g. `0.0.0.0:32960`; port 0 picks a free port
    /// (the bound address is printed on stderr).
    #[arg(long, env = "BMS_GATEWAY_LISTEN", default_value = "0.0.0.0:32960")]
    pub listen: String,

    /// ONNX model that scores each vehicle's window.
    #[arg(long, short, env = "BMS_MODEL")]
    pub model: PathBuf,

    /// Directory of the journal, the frames store and the prediction stores.
    #[arg(long, env = "BMS_STORE", value_name = "DIR")]
    pub store: PathBuf,

    /// Also serve HTTP `GET /ping` and `GET /metrics` (Prometheus) on this address.
    #[arg(long, env = "BMS_GATEWAY_ADMIN", value_name = "ADDR")]
    pub admin: Option<String>,

    /// File of VINs allowed to log in, one per line (blank lines and `#` comments are
    /// ignored). A login from any other VIN gets the failure response and that VIN's data
    /// on the connection is refused. Without it every VIN may log in.
    #[arg(long, env = "BMS_GATEWAY_REGISTRY", value_name = "FILE")]
    pub registry: Option<PathBuf>,

    /// Connections open at once; more are closed as soon as they are accepted.
    #[arg(long, env = "BMS_GATEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Seconds without a byte after which a connection is closed (GB/T 32960 terminals
    /// send a heartbeat at least every few tens of seconds).
    #[arg(long, env = "BMS_GATEWAY_IDLE_TIMEOUT", default_value_t = 180.0)]
    pub idle_timeout: f64,

    /// Seconds between writes of the journal into the frames store while serving (each
    /// closes the journal segment, appends go on in a new one); 0: only at shutdown.
    #[arg(long, env = "BMS_GATEWAY_FLUSH_SECS", default_value_t = 300.0)]
    pub flush_secs: f64,

    /// Seconds to wait for connections to finish their reads after SIGTERM/SIGINT.
    #[arg(long, env = "BMS_DRAIN_SECS", default_value_t = 25.0)]
    pub drain_secs: f64,

    /// Offset from UTC where calendar days start (days of the monitors, of the predictions
    /// and of the frames store's partitions), e.g. `+08:00`; as `bms predict`.
    #[arg(long, default_value = "+00:00", allow_hyphen_values = true)]
    pub utc_offset: String,

    /// OCV curve of the frame features (`nmc`, `lfp` or a `soc,volts` CSV file); as
    /// `bms predict`.
    #[arg(long, default_value = "nmc")]
    pub ocv: String,

    /// Alarm threshold instead of the model's.
    #[arg(long)]
    pub threshold: Option<f32>,

    /// Serve TLS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(
        long,
        env = "BMS_GATEWAY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "BMS_GATEWAY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// File of `username:password` lines (blank lines and `#` comments ignored) of the
    /// forwarding platforms allowed to log in with a platform login (`05`). A login with
    /// any other username or password is answered `02` and the connection closed.
    /// Passwords are never logged. Without it platform logins are refused.
    #[arg(long, env = "BMS_GATEWAY_PLATFORM_CREDENTIALS", value_name = "FILE")]
    pub platform_credentials: Option<PathBuf>,

    /// Longest packet accepted, in bytes (25 bytes of header and checksum plus the data
    /// unit); longer ones are refused unanswered. The standard allows up to 65,556.
    #[arg(long, default_value_t = MAX_PACKET)]
    pub max_packet_bytes: usize,

    /// Packets a connection may send per second, in bursts of up to one second's worth; the
    /// packets past it are refused unanswered and the connection is closed. 0 (the
    /// default): no limit, as a forwarding platform or a vehicle reissuing a day of
    /// backlog sends thousands at once; vehicles reporting every 10 s are well served by 20.
    #[arg(long, default_value_t = 0)]
    pub max_packets_per_sec: u32,
}

/// The longest packet the standard allows: 25 bytes around a 65,531-byte data unit.
const MAX_PACKET: usize = 25 + 65_531;

/// The longest timeout or drain accepted: a week.
const MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// Reads a registry file: one VIN a line, blank lines and `#` comments skipped.
pub fn read_registry(path: &std::path::Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --registry {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

pub fn run(args: GatewayArgs) -> Result<()> {
    let model = Model::load(&args.model)?;
    model
        .require_probability()
        .with_context(|| args.model.display().to_string())?;
    let threshold = args.threshold.unwrap_or(model.contract().threshold);
    anyhow::ensure!(
        (0.0..=1.0).contains(&threshold),
        "--threshold {threshold} is not a probability between 0 and 1"
    );
    anyhow::ensure!(
        args.idle_timeout > 0.0 && args.idle_timeout <= MAX_SECS,
        "--idle-timeout {} must be a positive number of seconds, at most {MAX_SECS} (a week)",
        args.idle_timeout
    );
    anyhow::ensure!(
        (0.0..=MAX_SECS).contains(&args.drain_secs),
        "--drain-secs {} must be zero or more seconds, at most {MAX_SECS} (a week)",
        args.drain_secs
    );
    anyhow::ensure!(
        (0.0..=MAX_SECS).contains(&args.flush_secs),
        "--flush-secs {} must be zero or more seconds, at most {MAX_SECS} (a week)",
        args.flush_secs
    );
    anyhow::ensure!(
        args.max_connections >= 1,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(
        (25..=MAX_PACKET).contains(&args.max_packet_bytes),
        "--max-packet-bytes {} must be between 25 and {MAX_PACKET} (the standard's longest packet)",
        args.max_packet_bytes
    );
    let registry = args.registry.as_deref().map(read_registry).transpose()?;
    let credentials = args
        .platform_credentials
        .as_deref()
        .map(gateway::auth::Credentials::read)
        .transpose()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(gateway::tls::server_config(c, k)?),
        _ => None,
    };
    let monitor = DailyConfig {
        features: FeatureConfig::new(
            ocv_curve(&args.ocv)?,
            bms_core::features::DEFAULT_ALARM_SPREAD_V,
        )?,
        utc_offset: args.utc_offset.parse::<UtcOffset>()?,
    };
    eprintln!(
        "bms gateway: model {} from {} (threshold {threshold}){}",
        model.contract().model_id,
        args.model.display(),
        registry
            .as_ref()
            .map_or_else(String::new, |r| format!(", {} VINs registered", r.len()))
    );
    if tls.is_some() {
        eprintln!(
            "bms gateway: TLS on (certificate {})",
            args.tls_cert
                .as_deref()
                .unwrap_or_else(|| std::path::Path::new(""))
                .display()
        );
    }
    let config = GatewayConfig {
        listen: args.listen,
        admin: args.admin,
        store: args.store,
        registry,
        max_connections: args.max_connections,
        idle_timeout: Duration::from_secs_f64(args.idle_timeout),
        monitor,
        threshold,
        drain: Duration::from_secs_f64(args.drain_secs),
        tls,
        credentials,
        max_packet_bytes: args.max_packet_bytes,
        max_packets_per_sec: (args.max_packets_per_sec > 0).then_some(args.max_packets_per_sec),
        flush_every: (args.flush_secs > 0.0).then(|| Duration::from_secs_f64(args.flush_secs)),
    };
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .max_blocking_threads(cpus.max(4))
        .thread_name("bms-gateway")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(gateway::run(Arc::new(model), config, |b| {
        eprintln!("bms gateway: listening on {}", b.listen);
        if let Some(a) = b.admin {
            eprintln!("bms gateway: admin on http://{a}");
        }
    }));
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    eprintln!("bms gateway: stopped");
    Ok(())
}
