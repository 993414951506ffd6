//! One vehicle (or terminal) connection: bytes → [`Decoder`] → replies, journal, monitors.
//!
//! Each read is decoded at once. Its accepted report packets are appended to the journal
//! as one group and the replies of the read are written only after that append is durable
//! (a failed append drops the report replies of the read and the frames are neither
//! scored nor counted as accepted). Then the frames go to the monitors on the blocking
//! pool and the predictions to the recorder.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use bms_core::Frame;
use bms_core::gbt32960::{Decoder, Edition, Event, PacketInfo, command, encode, response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::State;
use super::auth::Credentials;
use super::fleet::Pushed;
use super::metrics::{Metrics, refused};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 1 << 16;

/// A reply to send once the read's frames are durable, or at once.
struct Reply {
    bytes: Vec<u8>,
    /// Acknowledges a report: sent only if the journal append succeeded.
    durable: bool,
}

/// Bytes of a packet before its data unit (start symbol to data length).
const HEADER_LEN: usize = 24;

/// A connection's packet budget: a token bucket refilled at `rate` per second, holding at
/// most one second's worth.
struct Budget {
    rate: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Budget {
    fn new(rate: u32) -> Self {
        Budget {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: std::time::Instant::now(),
        }
    }

    /// Takes one packet's token; `false` when the budget is spent.
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    state: Arc<State>,
    mut stream: S,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let m = &state.metrics;
    let mut budget = state.config.max_packets_per_sec.map(Budget::new);
    // The platform logged in on this connection (`05`), if any.
    let mut platform: Option<String> = None;
    // Set when the connection must close once the read's replies are sent.
    let mut close = false;
    let mut decoder = Decoder::new();
    // The stream bytes the decoder has not consumed yet, from stream offset `raw_base`:
    // what a packet event's offset and length are cut from for the journal.
    let mut raw: Vec<u8> = Vec::new();
    let mut raw_base = 0u64;
    let mut logged_in: HashSet<String> = HashSet::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let idle = state.config.idle_timeout;
    loop {
        let n = tokio::select! {
            r = tokio::time::timeout(idle, stream.read(&mut buf)) => match r {
                Err(_) => {
                    Metrics::add(&m.connections_idle, 1);
                    eprintln!("bms gateway: {peer}: no bytes for {} s, closing", idle.as_secs_f64());
                    break;
                }
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    eprintln!("bms gateway: {peer}: read failed: {e}");
                    break;
                }
            },
            _ = shutdown.changed() => break,
        };
        Metrics::add(&m.bytes, n as u64);
        decoder.push(&buf[..n]);
        raw.extend_from_slice(&buf[..n]);

        let mut journal = Vec::new();
        let mut frames: Vec<(Frame, bool)> = Vec::new();
        let mut replies: Vec<Reply> = Vec::new();
        while let Some(event) = decoder.next() {
            if let Event::Frame(info, _) | Event::Packet(info) = &event {
                m.packet(info.command);
            }
            if close {
                // Past the rate budget or a failed platform login: the rest of the read is
                // refused unanswered.
                match &event {
                    Event::Frame(..) | Event::Packet(_) => m.refused(refused::CLOSING),
                    Event::Error(e) => m.refused(e.kind.name()),
                }
                continue;
            }
            if let Some(b) = budget.as_mut()
                && !b.take()
            {
                let at = match &event {
                    Event::Frame(info, _) | Event::Packet(info) => info.offset,
                    Event::Error(e) => e.offset,
                };
                m.refused(refused::RATE_LIMITED);
                eprintln!(
                    "bms gateway: {peer}: more than {} packets/s at byte offset {at}: \
                     refusing the rest of the read and closing",
                    b.rate
                );
                close = true;
                continue;
            }
            if let Event::Frame(info, _) | Event::Packet(info) = &event
                && info.len > state.config.max_packet_bytes
            {
                let why = format!(
                    "{} bytes, longer than --max-packet-bytes {}",
                    info.len, state.config.max_packet_bytes
                );
                refuse(m, peer, info, refused::TOO_LARGE, &why);
                continue;
            }
            match event {
                Event::Frame(info, f) => {
                    if !info.is_command() {
                        continue;
                    }
                    if !logged_in.contains(f.vin) {
                        refuse(m, peer, &info, refused::NOT_LOGGED_IN, "not logged in");
                        continue;
                    }
                    let start = (info.offset - raw_base) as usize;
                    journal.extend_from_slice(&raw[start..start + info.len]);
                    frames.push((f.to_owned(), info.command == command::REISSUE));
                    replies.push(reply(&info, response::SUCCESS, true));
                }
                Event::Packet(info) => {
                    if !info.is_command() {
                        // A vehicle's reply to a downlink command: nothing to answer.
                        continue;
                    }
                    let vin = info.id();
                    match info.command {
                        command::VEHICLE_LOGIN => {
                            if state.allowed(vin) {
                                logged_in.insert(vin.to_owned());
                                replies.push(reply(&info, response::SUCCESS, false));
                            } else {
                                logged_in.remove(vin);
                                refuse(m, peer, &info, refused::UNKNOWN_VIN, "not in the registry");
                                let flag = match info.edition {
                                    Edition::V2016 => response::ERROR,
                                    Edition::V2025 => response::VIN_UNKNOWN,
                                };
                                replies.push(reply(&info, flag, false));
                            }
                        }
                        // A report without battery data: nothing to store, acknowledged.
                        command::REALTIME | command::REISSUE if logged_in.contains(vin) => {
                            replies.push(reply(&info, response::SUCCESS, false));
                        }
                        command::VEHICLE_LOGOUT if logged_in.remove(vin) => {
                            replies.push(reply(&info, response::SUCCESS, false));
                        }
                        command::REALTIME | command::REISSUE | command::VEHICLE_LOGOUT => {
                            refuse(m, peer, &info, refused::NOT_LOGGED_IN, "not logged in");
                        }
                        command::PLATFORM_LOGIN if state.config.credentials.is_some() => {
                            let start = (info.offset - raw_base) as usize + HEADER_LEN;
                            // time(6) serial(2) username(12) password(20) encryption rule(1),
                            // checked to be 41 bytes by the decoder.
                            let data = &raw[start..start + 41];
                            let creds: &Credentials =
                                state.config.credentials.as_ref().expect("checked above");
                            let (user, pass) = (&data[8..20], &data[20..40]);
                            if creds.check(user, pass) {
                                eprintln!(
                                    "bms gateway: {peer}: platform {} logged in as {:?}",
                                    info.id(),
                                    Credentials::username(user)
                                );
                                platform = Some(info.id().to_owned());
                                replies.push(reply(&info, response::SUCCESS, false));
                            } else {
                                let why = format!(
                                    "username {:?} or its password not in --platform-credentials; closing",
                                    Credentials::username(user)
                                );
                                refuse(m, peer, &info, refused::BAD_CREDENTIALS, &why);
                                replies.push(reply(&info, response::ERROR, false));
                                close = true;
                            }
                        }
                        command::PLATFORM_LOGOUT if state.config.credentials.is_some() => {
                            if platform.as_deref() == Some(info.id()) {
                                platform = None;
                                replies.push(reply(&info, response::SUCCESS, false));
                            } else {
                                refuse(
                                    m,
                                    peer,
                                    &info,
                                    refused::NOT_LOGGED_IN,
                                    "platform not logged in",
                                );
                            }
                        }
                        command::HEARTBEAT => {
                            replies.push(reply(&info, response::SUCCESS, false));
                        }
                        command::TIME_SYNC => {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as i64);
                            match encode::response(
                                info.edition,
                                info.command,
                                vin,
                                response::SUCCESS,
                                Some(now),
                            ) {
                                Ok(bytes) => replies.push(Reply {
                                    bytes,
                                    durable: false,
                                }),
                                Err(e) => eprintln!("bms gateway: {peer}: time sync reply: {e}"),
                            }
                        }
                        _ => refuse(m, peer, &info, refused::UNSUPPORTED, "command not served"),
                    }
                }
                Event::Error(e) => {
                    m.refused(e.kind.name());
                    eprintln!("bms gateway: {peer}: refused: {e}");
                }
            }
        }
        let keep = decoder.pending();
        let consumed = raw.len() - keep;
        raw.drain(..consumed);
        raw_base += consumed as u64;

        let durable = if journal.is_empty() {
            true
        } else {
            match state.journal.append(journal).await {
                Ok(()) => {
                    Metrics::add(&m.frames_accepted, frames.len() as u64);
                    true
                }
                Err(why) => {
                    for _ in &frames {
                        m.refused(refused::JOURNAL);
                    }
                    eprintln!(
                        "bms gateway: {peer}: {} frames not acknowledged: {why}",
                        frames.len()
                    );
                    frames.clear();
                    false
                }
            }
        };
        let mut out = Vec::new();
        for r in replies.iter().filter(|r| durable || !r.durable) {
            out.extend_from_slice(&r.bytes);
        }
        if !out.is_empty()
            && let Err(e) = stream.write_all(&out).await
        {
            eprintln!("bms gateway: {peer}: write failed: {e}");
            // The frames are durable: they are still scored below.
            feed(&state, frames).await;
            break;
        }
        feed(&state, frames).await;
        if close {
            break;
        }
    }
    // A packet cut by the disconnect: counted and logged like the decoder reports it.
    decoder.finish();
    while let Some(event) = decoder.next() {
        if let Event::Error(e) = event {
            m.refused(e.kind.name());
            eprintln!("bms gateway: {peer}: at disconnect: {e}");
        }
    }
    let _ = stream.shutdown().await;
}

fn reply(info: &PacketInfo, flag: u8, durable: bool) -> Reply {
    Reply {
        bytes: encode::reply_to(info, flag).expect("a decoded packet's header re-encodes"),
        durable,
    }
}

fn refuse(m: &Metrics, peer: SocketAddr, info: &PacketInfo, kind: &'static str, why: &str) {
    m.refused(kind);
    eprintln!(
        "bms gateway: {peer}: refused {} at byte offset {} from VIN {}: {why}",
        bms_core::gbt32960::command_name(info.command),
        info.offset,
        info.id()
    );
}

/// Pushes durable frames to the monitors (on the blocking pool: a closed day runs the
/// model) and queues the predictions for the stores.
async fn feed(state: &Arc<State>, frames: Vec<(Frame, bool)>) {
    if frames.is_empty() {
        return;
    }
    let st = state.clone();
    let done = tokio::task::spawn_blocking(move || {
        let mut preds = Vec::new();
        let mut history = 0u64;
        for (f, reissue) in &frames {
            if st.fleet.push(f, *reissue, &mut preds) == Pushed::History {
                history += 1;
            }
        }
        (preds, history)
    })
    .await;
    let Ok((preds, history)) = done else {
        eprintln!("bms gateway: scoring task failed");
        return;
    };
    let m = &state.metrics;
    Metrics::add(&m.frames_history, history);
    if preds.is_empty() {
        return;
    }
    Metrics::add(&m.predictions, preds.len() as u64);
    if let Err(why) = state.recorder.record(preds) {
        eprintln!("bms gateway: predictions not recorded: {why}");
    }
}
