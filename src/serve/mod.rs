//! `bms serve`: the SageMaker model-serving contract (`/ping`, `/invocations`,
//! `/execution-parameters`) and the reference gateway's online scoring API
//! (`/v1/predict`), plus Prometheus `/metrics`.
//!
//! Shape of the server (hyper 1 HTTP/1.1 on a tokio multi-thread runtime):
//!
//! - **Admission.** A scoring request (`/invocations`, `/v1/predict`) first takes a permit
//!   from a semaphore of `max_inflight`; when none is left it is answered `429` with
//!   `Retry-After` at once, so memory (at most `max_inflight` bodies of `max_body` bytes)
//!   and queueing are bounded. While draining for shutdown, new requests get `503`.
//! - **Where inference runs.** Bodies are parsed and scored on tokio's blocking pool,
//!   capped at `workers` threads, so the reactor keeps serving sockets; the work holds its
//!   admission permit until it is really done. Opt-in (`inline_max_bytes`, default 0): a
//!   body up to that size that is the only scoring request in flight is scored on the
//!   reactor thread that received it, skipping the hop (one client: ~15 % more
//!   requests/s; eight clients: p99 tails of 1–3 ms, benches/RESULTS.md).
//! - **Timeouts.** Reading the head and the body, and answering, must each finish within
//!   `timeout` (`408` for a slow body, `503` when scoring overruns).
//! - **Shutdown.** SIGTERM or SIGINT stops accepting, lets every in-flight request finish
//!   and closes idle keep-alive connections, waiting at most `drain` (SageMaker sends
//!   SIGKILL 30 s after SIGTERM).
//! - **Store.** With `--store DIR`, every prediction that has a key (`/v1/predict`, and
//!   `/invocations` lines in the reference batch format `VIN,Date,…`) is queued for the
//!   stores `bms predict --out` writes and written in batches by one thread
//!   ([`recorder`]); shutdown writes everything queued before the process exits.
//! - **Errors.** One [`ApiError`] type maps every failure to its status in one place.
//!   Model panics are caught and answered `500`; no input reaches a panic path.

/// The request and response bodies, shared with the API Gateway handler (`bms-aws`).
pub use bms_batch::codec;

pub mod metrics;
pub mod recorder;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bms_core::model::Model;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use codec::{BadBody, Format};
use metrics::{Metrics, Route};
use recorder::{Committed, Recorder};

use bms_batch::store::Prediction;

/// The header SageMaker passes through to the container and back.
pub const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";

/// Everything `run` needs; the CLI builds it from flags and environment.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// Largest request body accepted, bytes.
    pub max_body: usize,
    /// `MaxPayloadInMB` reported by `/execution-parameters`.
    pub max_payload_mb: u32,
    /// Limit for reading a request and for answering it.
    pub timeout: Duration,
    /// Scoring requests admitted at once; more are answered 429.
    pub max_inflight: usize,
    /// Threads that score request bodies.
    pub workers: usize,
    /// Bodies up to this size are scored on the reactor thread when no other scoring
    /// request is in flight; 0: none.
    pub inline_max_bytes: usize,
    /// Longest wait for in-flight requests at shutdown.
    pub drain: Duration,
    /// Alarm threshold (the model's unless overridden).
    pub threshold: f32,
    /// Directory of the prediction stores (`--store`).
    pub store: Option<PathBuf>,
    /// Predictions waiting for the store writer before scoring requests get 503.
    pub store_max_queued: usize,
    /// Serve HTTPS with this configuration (`--tls-cert`, `--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bearer tokens one of which every request but `/ping` must carry; `None`: open.
    pub tokens: Option<Tokens>,
}

/// The bearer tokens `bms serve` accepts. Compared in constant time; never printed
/// (`Debug` shows how many there are).
#[derive(Clone)]
pub struct Tokens(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({})", self.0.len())
    }
}

impl Tokens {
    /// Tokens, one per line (blank lines and `#` comments skipped, each line trimmed):
    /// printable ASCII without spaces, 16 to 4096 bytes. Errors name the line only.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            anyhow::ensure!(
                (16..=4096).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic()),
                "line {}: a token is 16 to 4096 printable ASCII characters without spaces",
                i + 1
            );
            tokens.push(t.as_bytes().to_vec());
        }
        anyhow::ensure!(!tokens.is_empty(), "no token in it");
        Ok(Tokens(Arc::new(tokens)))
    }

    /// Whether an `Authorization` header value carries one of the tokens. Every token is
    /// compared over its whole length whatever matches, so the time taken says nothing
    /// about how much of a token was right.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(given) = authorization.and_then(|v| {
            v.strip_prefix(b"Bearer ")
                .or_else(|| v.strip_prefix(b"bearer "))
        }) else {
            return false;
        };
        let mut any = 0u8;
        for t in self.0.iter() {
            let mut diff = u8::from(t.len() != given.len());
            for (i, &b) in t.iter().enumerate() {
                diff |= b ^ given.get(i).copied().unwrap_or(0);
            }
            any |= u8::from(diff == 0);
        }
        any == 1
    }
}

struct State {
    model: Arc<Model>,
    config: ServeConfig,
    metrics: Arc<Metrics>,
    recorder: Option<Arc<Recorder>>,
    admit: Arc<Semaphore>,
    draining: AtomicBool,
}

/// A failed request: its status and the message sent back.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<BadBody> for ApiError {
    fn from(b: BadBody) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, b.0)
    }
}

type Resp = Response<Full<Bytes>>;

fn response(
    status: StatusCode,
    content_type: Option<&'static str>,
    body: impl Into<Bytes>,
) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

/// The one place errors become responses: plain text for the SageMaker routes, a JSON
/// `{"error": …}` for the gateway API.
fn error_response(e: ApiError, json: bool) -> Resp {
    let mut r = if json {
        let body = serde_json::json!({ "error": e.message }).to_string();
        response(e.status, Some("application/json"), body)
    } else {
        response(
            e.status,
            Some("text/plain; charset=utf-8"),
            format!("{}\n", e.message),
        )
    };
    match e.status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    r
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Serves until SIGTERM/SIGINT, then drains. `ready` receives the bound address (port 0
/// picks a free one).
pub async fn run(
    model: Arc<Model>,
    config: ServeConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    let addr = listener.local_addr()?;
    let drain = config.drain;
    let timeout = config.timeout;
    let metrics = Arc::new(Metrics::default());
    let recorder = match &config.store {
        Some(dir) => Some(Arc::new(Recorder::start(
            "bms serve",
            dir,
            &model.contract().spec,
            metrics.clone(),
            config.store_max_queued,
        )?)),
        None => None,
    };
    let state = Arc::new(State {
        model,
        admit: Arc::new(Semaphore::new(config.max_inflight)),
        config,
        metrics,
        recorder,
        draining: AtomicBool::new(false),
    });
    ready(addr);

    let graceful = GracefulShutdown::new();
    let acceptor = state
        .config
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        eprintln!("bms serve: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let watcher = graceful.watcher();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve_on(stream, state, timeout, watcher).await,
                        Some(acceptor) => {
                            // The handshake on the connection's task, bounded like a
                            // request's headers.
                            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => serve_on(tls, state, timeout, watcher).await,
                                Ok(Err(_)) | Err(_) => state.metrics.add_tls_failure(),
                            }
                        }
                    }
                });
            }
            signal = &mut shutdown => {
                eprintln!("bms serve: {signal}, finishing in-flight requests");
                break;
            }
        }
    }
    drop(listener);
    state.draining.store(true, Ordering::SeqCst);
    tokio::select! {
        _ = graceful.shutdown() => eprintln!("bms serve: all connections closed"),
        _ = tokio::time::sleep(drain) => eprintln!(
            "bms serve: connections still open after {} s, stopping anyway",
            drain.as_secs_f64()
        ),
    }
    if let Some(r) = &state.recorder {
        let r = r.clone();
        // Blocks until every queued prediction is written.
        let _ = tokio::task::spawn_blocking(move || r.finish()).await;
        eprintln!("bms serve: store flushed");
    }
    Ok(())
}

/// Serves one HTTP/1.1 connection over `io` (plain TCP or TLS) until it closes or a
/// graceful shutdown ends it.
async fn serve_on<IO>(io: IO, state: Arc<State>, timeout: Duration, watcher: Watcher)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(
            TokioIo::new(io),
            service_fn(move |req| handle(state.clone(), req)),
        );
    let _ = watcher.watch(conn).await;
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bms serve: cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let start = Instant::now();
    let route = Route::of(req.uri().path());
    let attributes = req
        .headers()
        .get(CUSTOM_ATTRIBUTES)
        .filter(|v| v.len() <= 1024 && v.to_str().is_ok())
        .cloned();
    let allowed = route == Route::Ping
        || state.config.tokens.as_ref().is_none_or(|t| {
            t.allows(
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            )
        });
    let result = if allowed {
        dispatch(&state, route, req).await
    } else {
        // No detail: which part of the header was wrong is nobody's business.
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized"))
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => error_response(e, route == Route::Predict),
    };
    if resp.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
    }
    if let Some(a) = attributes {
        resp.headers_mut()
            .insert(HeaderName::from_static(CUSTOM_ATTRIBUTES), a);
    }
    state
        .metrics
        .observe(route, resp.status().as_u16(), start.elapsed());
    Ok(resp)
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    )
}

async fn dispatch(
    state: &Arc<State>,
    route: Route,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let post = req.method() == Method::POST;
    match route {
        Route::Ping if get => match state.recorder.as_ref().and_then(|r| r.health()) {
            // SageMaker takes a non-200 /ping as unhealthy: nothing is acknowledged anyway.
            Some(why) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: the store cannot write: {why}"),
            )),
            None => Ok(response(StatusCode::OK, None, Bytes::new())),
        },
        Route::ExecutionParameters if get => Ok(response(
            StatusCode::OK,
            Some("application/json"),
            format!(
                "{{\"MaxConcurrentTransforms\":{},\"BatchStrategy\":\"MULTI_RECORD\",\"MaxPayloadInMB\":{}}}",
                state.config.workers, state.config.max_payload_mb
            ),
        )),
        Route::Metrics if get => Ok(response(
            StatusCode::OK,
            Some("text/plain; version=0.0.4; charset=utf-8"),
            state.metrics.render(&state.model.contract().model_id),
        )),
        Route::Invocations if post => invocations(state, req).await,
        Route::Predict if post => predict(state, req).await,
        Route::Ping | Route::ExecutionParameters | Route::Metrics => Err(method_not_allowed("GET")),
        Route::Invocations | Route::Predict => Err(method_not_allowed("POST")),
        Route::Other => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no route {}; routes: GET /ping, POST /invocations, GET /execution-parameters, POST /v1/predict, GET /metrics",
                req.uri().path()
            ),
        )),
    }
}

/// Admission: a permit, or 429 (saturated) / 503 (draining) at once.
fn admit(state: &Arc<State>) -> Result<Permit, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is shutting down",
        ));
    }
    if let Some(r) = &state.recorder
        && !r.has_room()
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the prediction store is behind; retry later",
        ));
    }
    match state.admit.clone().try_acquire_owned() {
        Ok(permit) => {
            state.metrics.in_flight_add(1);
            Ok(Permit {
                _permit: permit,
                state: state.clone(),
            })
        }
        Err(_) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "server saturated: {} scoring requests in flight; retry later",
                state.config.max_inflight
            ),
        )),
    }
}

/// An admission permit; updates the in-flight gauge when released.
struct Permit {
    _permit: OwnedSemaphorePermit,
    state: Arc<State>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.state.metrics.in_flight_add(-1);
    }
}

/// Reads the whole body within the size limit and the timeout.
async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    if let Some(len) =
        header_str(req.headers(), header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), limit);
    match tokio::time::timeout(state.config.timeout, body.collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} s",
                state.config.timeout.as_secs_f64()
            ),
        )),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn score(model: &Model, rows: &codec::Rows) -> Result<Vec<f32>, ApiError> {
    codec::check_missing(model, rows)?;
    codec::score(model, rows).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// Runs `work` inline for a small body when it is the only scoring request in flight,
/// else on the blocking pool holding `permit` until it returns; either way within the
/// timeout.
async fn run_work<T: Send + 'static>(
    state: &Arc<State>,
    permit: Permit,
    body_len: usize,
    work: impl FnOnce(&Model) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let inline = state.config.inline_max_bytes;
    if inline > 0 && body_len <= inline && state.metrics.in_flight() <= 1 {
        let out = work(&state.model);
        drop(permit);
        return out;
    }
    let model = state.model.clone();
    let task = tokio::task::spawn_blocking(move || {
        let out = work(&model);
        drop(permit);
        out
    });
    match tokio::time::timeout(state.config.timeout, task).await {
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "scoring did not finish within {} s",
                state.config.timeout.as_secs_f64()
            ),
        )),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scoring task failed: {e}"),
        )),
        Ok(Ok(out)) => out,
    }
}

async fn invocations(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let permit = admit(state)?;
    let headers = req.headers();
    let Some(out_format) = codec::accept_format(header_str(headers, header::ACCEPT)) else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "cannot answer in {}; use text/csv or application/json",
                header_str(headers, header::ACCEPT).unwrap_or("")
            ),
        ));
    };
    let in_format = match headers.get(header::CONTENT_TYPE) {
        None => Format::Csv,
        Some(v) => match v.to_str() {
            Ok(ct) => codec::content_format(Some(ct)),
            Err(_) => Err("(not ASCII)".to_owned()),
        }
        .map_err(|ct| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type {ct}; use text/csv or application/json"),
            )
        })?,
    };
    let body = read_body(state, req).await?;
    if body.is_empty() {
        return Ok(response(StatusCode::NO_CONTENT, None, Bytes::new()));
    }
    let len = body.len();
    let recorder = state.recorder.clone();
    let threshold = state.config.threshold;
    let (probs, text, committed) = run_work(state, permit, len, move |model| {
        let rows = codec::parse(in_format, &body, model.input_width())?;
        let probs = if rows.n == 0 {
            Vec::new()
        } else {
            score(model, &rows)?
        };
        let mut committed = None;
        if let Some(r) = recorder
            && !rows.keys.is_empty()
        {
            let preds = rows.keyed_predictions(
                &probs,
                model.input_width(),
                threshold,
                &model.contract().model_id,
            );
            committed = Some(record(&r, preds)?);
        }
        let text = codec::format_predictions(out_format, &probs);
        Ok((probs.len(), text, committed))
    })
    .await?;
    stored(committed).await?;
    if probs == 0 {
        return Ok(response(StatusCode::NO_CONTENT, None, Bytes::new()));
    }
    state.metrics.add_rows(probs);
    Ok(response(StatusCode::OK, Some(out_format.mime()), text))
}

async fn predict(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let permit = admit(state)?;
    let body = read_body(state, req).await?;
    let len = body.len();
    let threshold = state.config.threshold;
    let recorder = state.recorder.clone();
    let (text, committed) = run_work(state, permit, len, move |model| {
        let g = codec::parse_gateway(&body, model.input_width())?;
        let rows = codec::Rows {
            n: 1,
            x: g.x.clone(),
            keys: Vec::new(),
        };
        let p = score(model, &rows)?[0];
        let model_id = &model.contract().model_id;
        let mut committed = None;
        if let Some(r) = recorder {
            let pred = Prediction::new(&g.vin, g.date, p, threshold, model_id, g.x.clone());
            committed = Some(record(&r, vec![pred])?);
        }
        Ok((
            codec::format_gateway(&g, p, p >= threshold, model_id),
            committed,
        ))
    })
    .await?;
    stored(committed).await?;
    state.metrics.add_rows(1);
    Ok(response(StatusCode::OK, Some("application/json"), text))
}

fn record(recorder: &Recorder, preds: Vec<Prediction>) -> Result<Committed, ApiError> {
    recorder.record_acked(preds).map_err(|why| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("scored, but not recorded: {why}"),
        )
    })
}

/// Waits until a request's predictions are committed to the store: a 200 is sent only
/// after that; a write that failed is a 503 (the client retries; the store's keys make a
/// retry add nothing twice).
async fn stored(committed: Option<Committed>) -> Result<(), ApiError> {
    let Some(committed) = committed else {
        return Ok(());
    };
    match committed.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("scored, but not recorded: the store cannot write: {why}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "scored, but not recorded: the store writer stopped",
        )),
    }
}
