//! `bms gateway`: the platform side of GB/T 32960.3 (docs/GBT32960.md §11). Vehicles
//! connect over TCP, log in, send realtime and reissue reports; the gateway answers with
//! the standard's response packets, keeps every acknowledged frame, streams the frames
//! through one [`Monitor`](bms_core::Monitor) per VIN and records a prediction whenever a
//! vehicle's day closes.
//!
//! - **Connections** ([`conn`]). One task per connection with its own
//!   [`Decoder`](bms_core::gbt32960::Decoder), fed by reads of at most 64 KiB (the decoder
//!   holds at most one packet, ≤ 65,556 bytes, beyond the read). Vehicle login is answered
//!   `01` when the VIN is in the registry (no registry: every VIN) and with the failure
//!   flag otherwise (`02` in 2016, `04` *VIN unknown* in 2025); reports, logouts of a VIN
//!   that has not logged in on this connection are refused. Heartbeats, logouts and
//!   time syncs are answered. Refused and garbage packets are logged with their stream
//!   offset and reason and counted, never answered; decoding goes on.
//! - **Durability** ([`journal`]). A report is answered `01` only after its packet bytes
//!   are appended to the journal segment under `DIR/journal/` and fsynced (one group
//!   commit for everything appended meanwhile). If that fails, the reports of the read are
//!   not answered and their frames are dropped (the vehicle reissues them). On a graceful
//!   stop, and at the next start after a crash, each segment is written into the frames
//!   store `DIR/frames/date=YYYY-MM-DD/part-<segment>.parquet` and then removed.
//!   With `flush_every`, the open segment is also closed and written that often while
//!   serving (appends go on into a new segment meanwhile), so the frames store lags the
//!   acknowledgements by at most about that long.
//! - **Monitors and predictions** ([`fleet`]). Per VIN one monitor shared by every
//!   connection. Realtime frames newer than the monitor's latest are pushed; reissues and
//!   older or equal frames are stored as history only. The predictions of closed days go
//!   through the `bms serve --store` recorder into `DIR/results.sqlite` and
//!   `DIR/events.jsonl` (the `bms predict --out` stores, same event ids). Monitors start
//!   empty at each start (their history is not replayed from the frames store).
//! - **Limits.** `max_connections` open at once (more are closed at once), `idle_timeout`
//!   without a byte closes a connection (and bounds a TLS handshake). A packet longer than
//!   `max_packet_bytes` is refused; a connection that sends more packets than its
//!   `max_packets_per_sec` budget (a token bucket holding one second's worth) has the
//!   packets past it refused and is closed after the read.
//! - **Security** ([`tls`], [`auth`]). An optional TLS listener (rustls, PEM files). Platform
//!   logins (`05`) are answered `01` only when their username and password are in the
//!   `--platform-credentials` file (compared in constant time, never logged); a failed
//!   platform login is answered `02` and closes the connection; without the file platform
//!   logins are refused as unsupported.
//! - **Shutdown.** SIGTERM/SIGINT: stop accepting, let each connection finish the read it
//!   is handling (its replies, journal append and scoring), close the connections, write
//!   every queued prediction, flush the journal into the frames store, exit 0.
//! - **Admin** (optional): HTTP `GET /ping` and `GET /metrics` ([`metrics`]).

pub mod auth;
pub mod conn;
pub mod fleet;
pub mod journal;
pub mod metrics;
pub mod tls;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bms_core::model::Model;
use bms_core::{MonitorConfig, UtcOffset};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::serve::recorder::Recorder;
use fleet::Fleet;
use journal::Journal;
use metrics::Metrics;

/// Everything [`run`] needs; the CLI builds it from flags.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: String,
    pub admin: Option<String>,
    pub store: PathBuf,
    /// VINs allowed to log in; `None`: every VIN.
    pub registry: Option<HashSet<String>>,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub monitor: MonitorConfig,
    pub threshold: f32,
    /// Longest wait for connections to finish at shutdown.
    pub drain: Duration,
    /// Serve TLS instead of plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Platforms allowed to log in (`05`); `None`: platform logins are refused.
    pub credentials: Option<auth::Credentials>,
    /// Longest packet accepted (bytes, header and checksum included).
    pub max_packet_bytes: usize,
    /// Packets a connection may send per second (bursts of one second's worth); `None`:
    /// no limit.
    pub max_packets_per_sec: Option<u32>,
    /// How often the journal segment is closed and written into the frames store while
    /// serving; `None`: only at shutdown (and recovery).
    pub flush_every: Option<Duration>,
}

pub struct State {
    pub config: GatewayConfig,
    pub metrics: Arc<Metrics>,
    pub journal: Journal,
    pub fleet: Fleet,
    pub recorder: Recorder,
}

impl State {
    /// Whether `vin` may log in.
    pub fn allowed(&self, vin: &str) -> bool {
        self.config
            .registry
            .as_ref()
            .is_none_or(|r| r.contains(vin))
    }
}

/// Where the gateway listens, told to `ready` once bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
}

/// Flushes journal segments left by an earlier run into the frames store.
fn recover(dir: &std::path::Path, offset: UtcOffset) -> Result<()> {
    for seg in journal::leftover_segments(dir)? {
        let n = journal::flush_segment(dir, &seg, offset)
            .with_context(|| format!("recovering {}", seg.display()))?;
        eprintln!(
            "bms gateway: recovered {n} frames from {} into the frames store",
            seg.display()
        );
    }
    Ok(())
}

/// Serves until SIGTERM/SIGINT, then drains and flushes.
pub async fn run(
    model: Arc<Model>,
    config: GatewayConfig,
    ready: impl FnOnce(Bound),
) -> Result<()> {
    std::fs::create_dir_all(&config.store)
        .with_context(|| format!("cannot create --store {}", config.store.display()))?;
    let offset = config.monitor.utc_offset;
    let dir = config.store.clone();
    {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || recover(&dir, offset)).await??;
    }
    let listener = TcpListener::bind(config.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin = match &config.admin {
        Some(a) => Some(
            TcpListener::bind(a.as_str())
                .await
                .with_context(|| format!("cannot listen on --admin {a}"))?,
        ),
        None => None,
    };
    let metrics = Arc::new(Metrics::default());
    let recorder = Recorder::start(
        "bms gateway",
        &dir,
        &model.contract().spec,
        metrics.store.clone(),
        usize::MAX,
    )?;
    let journal = Journal::create(&dir)?;
    let fleet = Fleet::new(model.clone(), config.monitor.clone(), config.threshold)?;
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let acceptor = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let drain = config.drain;
    let state = Arc::new(State {
        config,
        metrics: metrics.clone(),
        journal,
        fleet,
        recorder,
    });
    let bound = Bound {
        listen: listener.local_addr()?,
        admin: admin.as_ref().map(|a| a.local_addr()).transpose()?,
    };
    ready(bound);

    let admin_task = admin.map(|l| {
        let metrics = metrics.clone();
        let model_id = model.contract().model_id.clone();
        tokio::spawn(serve_admin(l, metrics, model_id))
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let flusher = state.config.flush_every.map(|every| {
        let (st, mut stop) = (state.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                if let Err(e) = flush_closed_segment(&st).await {
                    eprintln!("bms gateway: {e:#}");
                }
            }
        })
    });
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("bms gateway: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                while conns.try_join_next().is_some() {}
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    Metrics::add(&metrics.connections_rejected, 1);
                    eprintln!(
                        "bms gateway: {peer}: {} connections open, closing",
                        state.config.max_connections
                    );
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                Metrics::add(&metrics.connections_total, 1);
                let state = state.clone();
                let stop = stop_rx.clone();
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    state.metrics.connections_open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match acceptor {
                        None => conn::serve(state.clone(), stream, peer, stop).await,
                        Some(acceptor) => {
                            let idle = state.config.idle_timeout;
                            match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => conn::serve(state.clone(), tls, peer, stop).await,
                                Ok(Err(e)) => {
                                    state.metrics.refused(metrics::refused::TLS_HANDSHAKE);
                                    eprintln!("bms gateway: {peer}: TLS handshake failed: {e}");
                                }
                                Err(_) => {
                                    state.metrics.refused(metrics::refused::TLS_HANDSHAKE);
                                    eprintln!(
                                        "bms gateway: {peer}: no TLS handshake within {} s, closing",
                                        idle.as_secs_f64()
                                    );
                                }
                            }
                        }
                    }
                    state.metrics.connections_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    drop(permit);
                });
            }
            signal = &mut shutdown => {
                eprintln!("bms gateway: {signal}, finishing in-flight reads");
                break;
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if let Some(f) = flusher {
        // It ends after the flush it may be in.
        let _ = f.await;
    }
    let all_closed =
        tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    match all_closed {
        Ok(()) => eprintln!("bms gateway: all connections closed"),
        Err(_) => {
            eprintln!(
                "bms gateway: connections still busy after {} s, stopping anyway",
                drain.as_secs_f64()
            );
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
    }
    if let Some(t) = admin_task {
        t.abort();
    }
    let st = state.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        st.recorder.finish();
        eprintln!("bms gateway: predictions flushed");
        st.journal.finish();
        let n = journal::flush_segment(&st.config.store, &st.journal.path(), offset)?;
        eprintln!("bms gateway: {n} frames written to the frames store");
        Ok(())
    })
    .await??;
    Ok(())
}

/// Closes the journal segment and writes it into the frames store (the segment stays for
/// the next flush or the recovery at start if that fails).
async fn flush_closed_segment(state: &Arc<State>) -> Result<()> {
    let Some(seg) = state
        .journal
        .rotate()
        .await
        .map_err(|e| anyhow::anyhow!("cannot rotate the journal: {e}"))?
    else {
        return Ok(());
    };
    let (dir, offset) = (state.config.store.clone(), state.config.monitor.utc_offset);
    let n = tokio::task::spawn_blocking(move || {
        journal::flush_segment(&dir, &seg, offset)
            .with_context(|| format!("flushing {} into the frames store", seg.display()))
    })
    .await??;
    Metrics::add(&state.metrics.frames_flushed, n);
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bms gateway: cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// The admin HTTP server: `GET /ping`, `GET /metrics`.
async fn serve_admin(listener: TcpListener, metrics: Arc<Metrics>, model_id: String) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let model_id: Arc<str> = model_id.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let metrics = metrics.clone();
        let model_id = model_id.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let metrics = metrics.clone();
            let model_id = model_id.clone();
            async move {
                let get = req.method() == Method::GET || req.method() == Method::HEAD;
                let (status, ct, body) = match req.uri().path() {
                    "/ping" if get => (StatusCode::OK, "text/plain", String::new()),
                    "/metrics" if get => (
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics.render(&model_id),
                    ),
                    "/ping" | "/metrics" => (
                        StatusCode::METHOD_NOT_ALLOWED,
                        "text/plain",
                        "method not allowed; use GET\n".into(),
                    ),
                    _ => (
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        "routes: GET /ping, GET /metrics\n".into(),
                    ),
                };
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(ct),
                );
                Ok::<_, Infallible>(r)
            }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
