//! Counters behind `GET /metrics`, rendered in the Prometheus text format (0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The routes the server knows; requests elsewhere count as `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    Ping,
    Invocations,
    ExecutionParameters,
    Predict,
    Metrics,
    Other,
}

impl Route {
    pub const ALL: [Route; 6] = [
        Route::Ping,
        Route::Invocations,
        Route::ExecutionParameters,
        Route::Predict,
        Route::Metrics,
        Route::Other,
    ];

    pub fn of(path: &str) -> Route {
        match path {
            "/ping" => Route::Ping,
            "/invocations" => Route::Invocations,
            "/execution-parameters" => Route::ExecutionParameters,
            "/v1/predict" => Route::Predict,
            "/metrics" => Route::Metrics,
            _ => Route::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::Ping => "/ping",
            Route::Invocations => "/invocations",
            Route::ExecutionParameters => "/execution-parameters",
            Route::Predict => "/v1/predict",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    30.0, 120.0,
];

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Every counter of a running server. Cheap to update from many threads.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(Route, u16), u64>>,
    latency: [Histogram; Route::ALL.len()],
    rows_scored: AtomicU64,
    in_flight: AtomicU64,
    store_written: AtomicU64,
    store_errors: AtomicU64,
    tls_failures: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, route: Route, status: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, status))
            .or_default() += 1;
        self.latency[route as usize].observe(elapsed);
    }

    pub fn add_rows(&self, n: usize) {
        self.rows_scored.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_stored(&self, n: usize) {
        self.store_written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A TLS handshake that failed or timed out (`--tls-cert`).
    pub fn add_tls_failure(&self) {
        self.tls_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight_add(&self, delta: i64) {
        self.in_flight.fetch_add(delta as u64, Ordering::Relaxed);
    }

    /// Scoring requests admitted and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Predictions written to the stores.
    pub fn stored(&self) -> u64 {
        self.store_written.load(Ordering::Relaxed)
    }

    /// Failed store writes.
    pub fn store_errors(&self) -> u64 {
        self.store_errors.load(Ordering::Relaxed)
    }

    pub fn rows_scored(&self) -> u64 {
        self.rows_scored.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, model_id: &str) -> String {
        let mut o = String::with_capacity(4096);
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        o.push_str("# HELP bms_requests_total HTTP requests answered, by route and status.\n");
        o.push_str("# TYPE bms_requests_total counter\n");
        for ((route, status), n) in &requests {
            let _ = writeln!(
                o,
                "bms_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                route.label()
            );
        }
        o.push_str(
            "# HELP bms_request_errors_total HTTP requests answered with a 4xx or 5xx status, by route and status.\n",
        );
        o.push_str("# TYPE bms_request_errors_total counter\n");
        for ((route, status), n) in requests.iter().filter(|((_, s), _)| *s >= 400) {
            let _ = writeln!(
                o,
                "bms_request_errors_total{{route=\"{}\",status=\"{status}\"}} {n}",
                route.label()
            );
        }
        o.push_str(
            "# HELP bms_request_duration_seconds Time from request head to response, by route.\n",
        );
        o.push_str("# TYPE bms_request_duration_seconds histogram\n");
        for route in Route::ALL {
            let h = &self.latency[route as usize];
            let mut cum = 0u64;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += h.counts[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    o,
                    "bms_request_duration_seconds_bucket{{route=\"{}\",le=\"{b}\"}} {cum}",
                    route.label()
                );
            }
            cum += h.counts[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "bms_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {cum}",
                route.label()
            );
            let _ = writeln!(
                o,
                "bms_request_duration_seconds_sum{{route=\"{}\"}} {}",
                route.label(),
                h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
            );
            let _ = writeln!(
                o,
                "bms_request_duration_seconds_count{{route=\"{}\"}} {cum}",
                route.label()
            );
        }
        let gauge = |o: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        gauge(
            &mut o,
            "bms_rows_scored_total",
            "counter",
            "Rows (windows) scored by the model.",
            self.rows_scored(),
        );
        gauge(
            &mut o,
            "bms_requests_in_flight",
            "gauge",
            "Scoring requests admitted and not yet answered.",
            self.in_flight.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "bms_store_predictions_total",
            "counter",
            "Predictions written to the --store stores.",
            self.store_written.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "bms_store_errors_total",
            "counter",
            "Failed writes to the --store stores.",
            self.store_errors.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "bms_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out (plaintext clients on a TLS port, say).",
            self.tls_failures.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP bms_model_info The loaded model.\n# TYPE bms_model_info gauge\nbms_model_info{{model_id=\"{}\"}} 1",
            model_id.replace('\\', "\\\\").replace('"', "\\\"")
        );
        o
    }
}
