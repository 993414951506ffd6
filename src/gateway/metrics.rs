//! Counters behind the admin `GET /metrics`, in the Prometheus text format (0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bms_core::gbt32960::command_name;

use crate::serve::metrics::Metrics as StoreMetrics;

/// Why a packet (or run of bytes) was refused: the decoder's kinds (`checksum`,
/// `not-a-packet`…) and the gateway's own.
pub mod refused {
    /// A report or logout from a VIN that has not logged in on this connection.
    pub const NOT_LOGGED_IN: &str = "not-logged-in";
    /// A login from a VIN the registry does not list.
    pub const UNKNOWN_VIN: &str = "unknown-vin";
    /// A command the gateway does not serve (downlink commands; platform logins without
    /// `--platform-credentials`).
    pub const UNSUPPORTED: &str = "unsupported";
    /// A platform login whose username or password is not in `--platform-credentials`.
    pub const BAD_CREDENTIALS: &str = "bad-credentials";
    /// A packet longer than `--max-packet-bytes`.
    pub const TOO_LARGE: &str = "too-large";
    /// A packet past the connection's `--max-packets-per-sec` budget (the connection is
    /// closed after it).
    pub const RATE_LIMITED: &str = "rate-limited";
    /// A packet in the same read after the one that closes the connection (past the rate
    /// budget, or a failed platform login).
    pub const CLOSING: &str = "closing";
    /// A TLS handshake that failed or timed out (the connection is closed).
    pub const TLS_HANDSHAKE: &str = "tls-handshake";
    /// Frames that could not be written to the journal (not acknowledged).
    pub const JOURNAL: &str = "journal-failed";
}

#[derive(Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    /// Closed at once: the connection limit was reached.
    pub connections_rejected: AtomicU64,
    /// Closed after the idle timeout.
    pub connections_idle: AtomicU64,
    pub bytes: AtomicU64,
    pub frames_accepted: AtomicU64,
    /// Accepted frames kept as history only (not pushed to a monitor).
    pub frames_history: AtomicU64,
    /// Frames written into the frames store while serving (by `flush_every`).
    pub frames_flushed: AtomicU64,
    pub predictions: AtomicU64,
    packets: Mutex<BTreeMap<u8, u64>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// The prediction recorder's counters (written, errors).
    pub store: std::sync::Arc<StoreMetrics>,
}

impl Metrics {
    pub fn packet(&self, command: u8) {
        *self
            .packets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(command)
            .or_default() += 1;
    }

    pub fn refused(&self, kind: &'static str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self, model_id: &str) -> String {
        let mut o = String::with_capacity(2048);
        let one = |o: &mut String, name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one(
            &mut o,
            "bms_gateway_connections_open",
            "gauge",
            "TCP connections open.",
            &self.connections_open,
        );
        one(
            &mut o,
            "bms_gateway_connections_total",
            "counter",
            "TCP connections accepted.",
            &self.connections_total,
        );
        one(
            &mut o,
            "bms_gateway_connections_rejected_total",
            "counter",
            "Connections closed at once because --max-connections were open.",
            &self.connections_rejected,
        );
        one(
            &mut o,
            "bms_gateway_connections_idle_closed_total",
            "counter",
            "Connections closed after --idle-timeout without a byte.",
            &self.connections_idle,
        );
        one(
            &mut o,
            "bms_gateway_bytes_total",
            "counter",
            "Bytes received from vehicles.",
            &self.bytes,
        );
        let packets = self
            .packets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        o.push_str("# HELP bms_gateway_packets_total Packets decoded, by command.\n");
        o.push_str("# TYPE bms_gateway_packets_total counter\n");
        for (cmd, n) in &packets {
            let _ = writeln!(
                o,
                "bms_gateway_packets_total{{command=\"{cmd:02X}\",name=\"{}\"}} {n}",
                command_name(*cmd)
            );
        }
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        o.push_str(
            "# HELP bms_gateway_refused_total Packets or byte runs refused (not stored, not acknowledged), by kind.\n",
        );
        o.push_str("# TYPE bms_gateway_refused_total counter\n");
        for (kind, n) in &refused {
            let _ = writeln!(o, "bms_gateway_refused_total{{kind=\"{kind}\"}} {n}");
        }
        one(
            &mut o,
            "bms_gateway_frames_accepted_total",
            "counter",
            "Frames written to the journal and acknowledged.",
            &self.frames_accepted,
        );
        one(
            &mut o,
            "bms_gateway_frames_history_total",
            "counter",
            "Accepted frames stored as history only (reissues, or not newer than the vehicle's latest).",
            &self.frames_history,
        );
        one(
            &mut o,
            "bms_gateway_frames_flushed_total",
            "counter",
            "Frames written into the frames store while serving (--flush-secs).",
            &self.frames_flushed,
        );
        one(
            &mut o,
            "bms_gateway_predictions_total",
            "counter",
            "Predictions made when a vehicle's day closed.",
            &self.predictions,
        );
        let _ = writeln!(
            o,
            "# HELP bms_gateway_predictions_recorded_total Predictions written to the stores.\n# TYPE bms_gateway_predictions_recorded_total counter\nbms_gateway_predictions_recorded_total {}",
            self.store.stored()
        );
        let _ = writeln!(
            o,
            "# HELP bms_gateway_store_errors_total Failed prediction store writes.\n# TYPE bms_gateway_store_errors_total counter\nbms_gateway_store_errors_total {}",
            self.store.store_errors()
        );
        let _ = writeln!(
            o,
            "# HELP bms_model_info The loaded model.\n# TYPE bms_model_info gauge\nbms_model_info{{model_id=\"{}\"}} 1",
            model_id.replace('\\', "\\\\").replace('"', "\\\"")
        );
        o
    }
}
