//! The streaming decoder (see the module docs and `docs/GBT32960.md`).
//!
//! Feed bytes with [`Decoder::push`] in pieces of any size (one byte at a time works), take
//! [`Event`]s with [`Decoder::next`] until it returns `None`, and call [`Decoder::finish`] at
//! the end of the stream so that a truncated last packet is reported.
//!
//! Choices where the standard is silent (`docs/GBT32960.md` §7 lists them with reasons):
//! - A candidate packet start is the start symbol followed by a plausible header: a known
//!   command range, a response flag and an encryption byte the edition defines, an ASCII id
//!   (padded with NUL or spaces) and a length of at most 65531. Anything else is skipped as
//!   bytes that are not a packet, reported once per run of such bytes.
//! - A packet whose BCC is wrong is reported. If its declared length ends where another
//!   start symbol (or the stream) begins, the whole packet is skipped; otherwise the length
//!   itself is suspect and the decoder rescans from the byte after the start symbol,
//!   without reporting again what it skips inside the failed packet's declared span.
//! - Out-of-range readings (a SOC above 100, a cell above 60 V, a probe code 251–253) decode
//!   to NaN like the abnormal and invalid markers. A count field holding a marker leaves the
//!   list after it undefined: the packet is refused.
//! - A realtime item of the vehicle, alarm, cell-voltage or temperature type that appears
//!   twice in one packet is refused (which one holds would be a guess).
//! - Cell voltages and probes are positional: ordered by subsystem (pack) number, then by
//!   first-cell number; the 2016 entries of each subsystem must tile 1…total exactly, and a
//!   subsystem (pack, probe group) number may appear once.
//! - A realtime or reissue packet without cell voltages or without temperatures gives no
//!   frame (SPEC §2 needs both) and is counted in [`DecodeCounts::no_frame`]; a packet
//!   without the vehicle item gives a frame whose pack voltage, current and SOC are NaN; a
//!   packet without the alarm item gives a frame without alarm flags, as does a flags DWORD
//!   holding a marker.
//! - A 2025 realtime packet may omit the signature block; when present, it must end the
//!   data unit exactly.

use std::fmt;

use super::{Edition, MAX_DATA_LEN, PACKET_OVERHEAD, command};
use crate::frame::FrameRef;

const HEADER_LEN: usize = 24;

/// What was wrong with a packet or a run of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeErrorKind {
    /// Bytes that do not begin a packet (no start symbol, or an implausible header).
    NotAPacket,
    /// The BCC does not match the packet's bytes.
    Checksum,
    /// The data unit is encrypted (encryption byte other than `01`): it cannot be read.
    Encrypted,
    /// The stream ended inside a packet.
    Truncated,
    /// The data unit's layout is wrong: a length past the data, an unknown item type, a
    /// marker in a count, a repeated item, entries that do not tile.
    Layout,
    /// The packet's time field is not a date and time.
    Time,
}

impl DecodeErrorKind {
    /// A short stable name (`checksum`, `encrypted`…) for counts and reject files.
    pub fn name(self) -> &'static str {
        match self {
            DecodeErrorKind::NotAPacket => "not-a-packet",
            DecodeErrorKind::Checksum => "checksum",
            DecodeErrorKind::Encrypted => "encrypted",
            DecodeErrorKind::Truncated => "truncated",
            DecodeErrorKind::Layout => "layout",
            DecodeErrorKind::Time => "time",
        }
    }
}

/// A packet (or a run of bytes) the decoder refused. It produced no frame; decoding goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Stream offset of the first byte concerned (the start symbol of a packet).
    pub offset: u64,
    /// Bytes of the stream this error accounts for.
    pub len: u64,
    pub kind: DecodeErrorKind,
    /// The packet's edition and command, when its header was read.
    pub edition: Option<Edition>,
    pub command: Option<u8>,
    /// The VIN (or platform id) of the packet, when readable.
    pub vin: Option<String>,
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte offset {}", self.offset)?;
        if let Some(cmd) = self.command {
            write!(f, ", {} packet", command_name(cmd))?;
        }
        if let Some(vin) = &self.vin {
            write!(f, ", VIN {vin}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// The header facts of a packet the decoder accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// Stream offset of the packet's first start byte.
    pub offset: u64,
    /// Bytes of the whole packet (25 + data length).
    pub len: usize,
    pub edition: Edition,
    pub command: u8,
    /// `FE` for a command packet; otherwise the reply's result code.
    pub response: u8,
    pub encryption: u8,
    id: [u8; 17],
    id_len: u8,
    /// The data unit's time (UTC ms), for the commands that carry one.
    pub time_ms: Option<i64>,
    /// The login serial of a vehicle or platform login/logout.
    pub serial: Option<u16>,
}

impl PacketInfo {
    /// The unique id: the VIN of a vehicle packet, a platform's code for platform
    /// login/logout; without its padding.
    pub fn id(&self) -> &str {
        // Checked to be printable ASCII when the header was accepted.
        std::str::from_utf8(&self.id[..self.id_len as usize]).unwrap_or("")
    }

    /// Whether this is a command packet (response flag `FE`) rather than a reply.
    pub fn is_command(&self) -> bool {
        self.response == super::response::COMMAND
    }
}

/// One thing the decoder found in the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// A realtime or reissue report and the frame it carries (borrowed from the decoder
    /// until the next call).
    Frame(PacketInfo, FrameRef<'a>),
    /// Any other packet the decoder accepted (logins, logouts, heartbeats, replies,
    /// platform packets, reports without battery data).
    Packet(PacketInfo),
    /// A packet or bytes refused.
    Error(DecodeError),
}

/// What the decoder has seen so far. `bytes == packet_bytes + error_bytes + pending`
/// where pending is what it holds waiting for more input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeCounts {
    /// Bytes consumed (accepted packets and refused bytes).
    pub bytes: u64,
    /// Packets accepted, by command ID.
    pub by_command: [u64; 256],
    /// Frames produced (one per accepted realtime or reissue command packet with battery data).
    pub frames: u64,
    /// Accepted realtime or reissue command packets without cell voltages or temperatures.
    pub no_frame: u64,
    /// Accepted reply packets (response flag other than `FE`).
    pub replies: u64,
    /// Errors reported, and the bytes they account for.
    pub errors: u64,
    pub error_bytes: u64,
    /// Errors by kind, in [`DecodeErrorKind`] order.
    pub errors_by_kind: [u64; 6],
}

impl Default for DecodeCounts {
    fn default() -> Self {
        DecodeCounts {
            bytes: 0,
            by_command: [0; 256],
            frames: 0,
            no_frame: 0,
            replies: 0,
            errors: 0,
            error_bytes: 0,
            errors_by_kind: [0; 6],
        }
    }
}

impl DecodeCounts {
    /// Accepted packets of every command.
    pub fn packets(&self) -> u64 {
        self.by_command.iter().sum()
    }

    /// `(command, count)` for the commands seen, in command order.
    pub fn commands(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.by_command
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (c as u8, *n))
    }

    /// `(kind, count)` for the error kinds seen.
    pub fn error_kinds(&self) -> impl Iterator<Item = (DecodeErrorKind, u64)> + '_ {
        const KINDS: [DecodeErrorKind; 6] = [
            DecodeErrorKind::NotAPacket,
            DecodeErrorKind::Checksum,
            DecodeErrorKind::Encrypted,
            DecodeErrorKind::Truncated,
            DecodeErrorKind::Layout,
            DecodeErrorKind::Time,
        ];
        KINDS
            .into_iter()
            .zip(self.errors_by_kind)
            .filter(|(_, n)| *n > 0)
    }
}

impl fmt::Display for DecodeCounts {
    /// `1,204 packets (vehicle login 10, realtime report 1,180, …), 1,180 frames, 2 refused
    /// (checksum 1, truncated 1)`, plus the packets without battery data and the replies
    /// when there are any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} packets", self.packets())?;
        let mut sep = " (";
        for (cmd, n) in self.commands() {
            write!(f, "{sep}{} {n}", command_name(cmd))?;
            sep = ", ";
        }
        if sep == ", " {
            f.write_str(")")?;
        }
        write!(f, ", {} frames", self.frames)?;
        if self.no_frame > 0 {
            write!(
                f,
                ", {} reports without cell voltages or temperatures (no frame)",
                self.no_frame
            )?;
        }
        if self.replies > 0 {
            write!(f, ", {} replies", self.replies)?;
        }
        write!(f, ", {} refused", self.errors)?;
        let mut sep = " (";
        for (kind, n) in self.error_kinds() {
            write!(f, "{sep}{} {n}", kind.name())?;
            sep = ", ";
        }
        if sep == ", " {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The name of a command ID, as reports print it.
pub fn command_name(cmd: u8) -> &'static str {
    match cmd {
        command::VEHICLE_LOGIN => "vehicle login",
        command::REALTIME => "realtime report",
        command::REISSUE => "reissue report",
        command::VEHICLE_LOGOUT => "vehicle logout",
        command::PLATFORM_LOGIN => "platform login",
        command::PLATFORM_LOGOUT => "platform logout",
        command::HEARTBEAT => "heartbeat",
        command::TIME_SYNC => "time sync",
        0x09 => "activation",
        0x0A => "activation response",
        0x0B => "key exchange",
        0x80 => "query",
        0x81 => "setting",
        0x82 => "terminal control",
        0xC0..=0xFE => "platform-exchange custom",
        _ => "unknown command",
    }
}

/// Converts a packet's 6-byte time (GMT+8, year − 2000) to UTC milliseconds, or says why
/// it is not a time.
pub fn time_to_utc_ms(t: &[u8; 6]) -> Result<i64, String> {
    let bad = || {
        format!(
            "time field {:02X} {:02X} {:02X} {:02X} {:02X} {:02X} is not a date and time \
             (20{:02}-{:02}-{:02} {:02}:{:02}:{:02})",
            t[0], t[1], t[2], t[3], t[4], t[5], t[0], t[1], t[2], t[3], t[4], t[5]
        )
    };
    if t[0] > 99 {
        return Err(bad());
    }
    let date = chrono::NaiveDate::from_ymd_opt(2000 + i32::from(t[0]), t[1].into(), t[2].into())
        .ok_or_else(bad)?;
    let dt = date
        .and_hms_opt(t[3].into(), t[4].into(), t[5].into())
        .ok_or_else(bad)?;
    Ok(dt.and_utc().timestamp_millis() - 8 * 3_600_000)
}

/// One cell-voltage entry or probe group found in an item, before ordering.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Subsystem, pack or probe-group number.
    group: u8,
    /// 2016: first cell number and total cells of the subsystem; otherwise 1 and `n`.
    first: u16,
    total: u16,
    /// Values in this entry, and where they start in the data unit.
    n: usize,
    pos: usize,
}

/// Which frame-relevant items a packet had.
#[derive(Default)]
struct Seen {
    vehicle: bool,
    alarm: bool,
    cells: bool,
    temps: bool,
}

enum Step {
    Frame(PacketInfo),
    Packet(PacketInfo),
    Error(DecodeError),
}

/// The streaming decoder. Memory is what the caller pushed and has not yet drained, plus at
/// most one packet (≤ 65,556 bytes) waiting for its end; no allocation per frame after the
/// buffers have grown to the largest packet.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Next unread byte in `buf`.
    pos: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    finished: bool,
    /// Stream offset before which refused bytes are not reported again (inside the span of
    /// a packet already reported).
    quiet_until: u64,
    /// A run of bytes that are not a packet, not yet reported: (offset, len).
    garbage: Option<(u64, u64)>,
    counts: DecodeCounts,
    vin: String,
    pack: [f64; 3],
    alarm_flags: Option<u32>,
    cells: Vec<f64>,
    temps: Vec<f64>,
    entries: Vec<Entry>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes of the stream. Pushing after [`finish`](Self::finish) continues the
    /// stream (the end mark is dropped).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.finished = false;
    }

    /// Marks the end of the stream: what is left is then reported (a truncated packet, bytes
    /// that are not a packet) by the following calls to [`next`](Self::next).
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The counts so far.
    pub fn counts(&self) -> &DecodeCounts {
        &self.counts
    }

    /// Bytes held waiting for more input.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next event, or `None` when more input is needed (or, after `finish`, when the
    /// stream is exhausted).
    #[allow(clippy::should_implement_trait)] // a lending iterator: events borrow the decoder
    pub fn next(&mut self) -> Option<Event<'_>> {
        match self.step()? {
            Step::Frame(info) => Some(Event::Frame(
                info,
                FrameRef {
                    vin: &self.vin,
                    timestamp_ms: info.time_ms.unwrap_or_default(),
                    pack_voltage: self.pack[0],
                    pack_current: self.pack[1],
                    soc: self.pack[2],
                    cell_voltages: &self.cells,
                    temperatures: &self.temps,
                    alarm_flags: self.alarm_flags,
                },
            )),
            Step::Packet(info) => Some(Event::Packet(info)),
            Step::Error(e) => Some(Event::Error(e)),
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Skips `n` bytes that are not (part of) an accepted packet.
    fn skip(&mut self, n: usize) {
        let start = self.offset();
        let end = start + n as u64;
        self.pos += n;
        self.counts.bytes += n as u64;
        let from = start.max(self.quiet_until);
        if from >= end {
            self.counts.error_bytes += n as u64;
            return;
        }
        self.counts.error_bytes += from - start;
        match &mut self.garbage {
            Some((_, len)) => *len += end - from,
            None => self.garbage = Some((from, end - from)),
        }
    }

    fn error(&mut self, e: DecodeError) -> Step {
        self.counts.errors += 1;
        self.counts.errors_by_kind[e.kind as usize] += 1;
        Step::Error(e)
    }

    /// Reports the pending run of non-packet bytes, if any.
    fn take_garbage(&mut self) -> Option<Step> {
        let (offset, len) = self.garbage.take()?;
        self.counts.error_bytes += len;
        let reason = format!("{len} byte(s) that are not a packet skipped");
        Some(self.error(DecodeError {
            offset,
            len,
            kind: DecodeErrorKind::NotAPacket,
            edition: None,
            command: None,
            vin: None,
            reason,
        }))
    }

    fn step(&mut self) -> Option<Step> {
        loop {
            let avail = &self.buf[self.pos..];
            if avail.is_empty() {
                return if self.finished {
                    self.take_garbage()
                } else {
                    None
                };
            }
            // The next start symbol candidate.
            let Some(c) = find_start(avail) else {
                // No start byte at all: everything is garbage, except a last byte that may
                // begin a start symbol when more input comes.
                let keep = usize::from(!self.finished && is_start_byte(avail[avail.len() - 1]));
                let n = avail.len() - keep;
                self.skip(n);
                if keep == 1 {
                    return None;
                }
                continue;
            };
            if c > 0 {
                self.skip(c);
                continue;
            }
            let avail = &self.buf[self.pos..];
            if avail.len() < 2 {
                // A lone start byte at the end of what we have.
                if self.finished {
                    self.skip(1);
                    continue;
                }
                return None;
            }
            let edition = Edition::from_start_byte(avail[0]).expect("find_start checked it");
            // Judge the header as far as it has arrived.
            if !plausible_header(edition, &avail[..avail.len().min(HEADER_LEN)]) {
                self.skip(1);
                continue;
            }
            if avail.len() < HEADER_LEN {
                if !self.finished {
                    return None;
                }
                match self.truncated(edition, avail.len()) {
                    Some(step) => return Some(step),
                    None => continue,
                }
            }
            let data_len = usize::from(u16::from_be_bytes([avail[22], avail[23]]));
            let total = PACKET_OVERHEAD + data_len;
            if avail.len() < total {
                if !self.finished {
                    return None;
                }
                match self.truncated(edition, avail.len()) {
                    Some(step) => return Some(step),
                    None => continue,
                }
            }
            let bcc = avail[2..total - 1].iter().fold(0u8, |a, b| a ^ b);
            if bcc != avail[total - 1] {
                // Does the declared length end where the next packet (or the stream) starts?
                let length_fits = if avail.len() >= total + 2 {
                    is_start_byte(avail[total]) && avail[total] == avail[total + 1]
                } else if self.finished {
                    avail.len() == total
                } else {
                    return None;
                };
                let offset = self.offset();
                if offset < self.quiet_until {
                    self.skip(1);
                    continue;
                }
                if let Some(g) = self.take_garbage() {
                    return Some(g);
                }
                let sent = self.buf[self.pos + total - 1];
                let mut e = self.header_error(edition, DecodeErrorKind::Checksum);
                e.reason = format!(
                    "wrong checksum: the packet's BCC is {sent:02X}, its bytes give {bcc:02X}"
                );
                if length_fits {
                    e.len = total as u64;
                    self.skip_reported(total);
                } else {
                    e.reason.push_str(
                        "; its declared length does not end at another packet, so the \
                         decoder resynchronises from the next start symbol",
                    );
                    e.len = 1;
                    self.quiet_until = offset + total as u64;
                    self.skip_reported(1);
                }
                return Some(self.error(e));
            }
            if let Some(g) = self.take_garbage() {
                return Some(g);
            }
            self.quiet_until = 0;
            let step = self.packet(edition, total);
            self.pos += total;
            self.counts.bytes += total as u64;
            if matches!(step, Step::Error(_)) {
                // A packet refused for its content (encrypted, layout, time): its bytes are
                // the error's (found by fuzzing: `bytes = packets + errors` did not hold).
                self.counts.error_bytes += total as u64;
            }
            return Some(step);
        }
    }

    /// Consumes bytes already accounted for by a reported error.
    fn skip_reported(&mut self, n: usize) {
        self.pos += n;
        self.counts.bytes += n as u64;
        self.counts.error_bytes += n as u64;
    }

    /// Reports the packet at `pos` that the stream's end cut short; `None` when it lies
    /// inside a packet already reported (skipped quietly: the caller goes on scanning).
    fn truncated(&mut self, edition: Edition, have: usize) -> Option<Step> {
        let mut e = self.header_error(edition, DecodeErrorKind::Truncated);
        e.reason = if have >= HEADER_LEN {
            let avail = &self.buf[self.pos..];
            let total = PACKET_OVERHEAD + usize::from(u16::from_be_bytes([avail[22], avail[23]]));
            format!("the stream ends inside a packet: {have} of its {total} bytes arrived")
        } else {
            format!("the stream ends inside a packet header: {have} of its 24 bytes arrived")
        };
        // The error covers the bytes up to the first start symbol inside them (all of them
        // when there is none): a packet found there by the rescan below is its own event,
        // so events never overlap (found by fuzzing).
        let avail = &self.buf[self.pos..self.pos + have];
        e.len = avail[1..]
            .windows(2)
            .position(|w| is_start_byte(w[0]) && w[0] == w[1])
            .map_or(have, |i| i + 1) as u64;
        let offset = self.offset();
        if offset < self.quiet_until {
            // Inside a packet already reported: not reported again.
            self.skip(1);
            return None;
        }
        if let Some(g) = self.take_garbage() {
            // Report the garbage first; the truncated packet comes on the next call.
            return Some(g);
        }
        // The declared length may be what is wrong: packets that begin inside the span
        // are still read (what they do not cover is not reported again).
        self.quiet_until = offset + have as u64;
        self.skip_reported(1);
        Some(self.error(e))
    }

    /// An error about the packet at `pos`, with what its header tells.
    fn header_error(&self, edition: Edition, kind: DecodeErrorKind) -> DecodeError {
        let avail = &self.buf[self.pos..];
        let command = avail.get(2).copied();
        let vin = avail.get(4..21).map(|id| {
            let (bytes, len) = id_of(id);
            String::from_utf8_lossy(&bytes[..len]).into_owned()
        });
        DecodeError {
            offset: self.offset(),
            len: 0,
            kind,
            edition: Some(edition),
            command,
            vin: vin.filter(|v| !v.is_empty()),
            reason: String::new(),
        }
    }

    /// Decodes the checksummed packet of `total` bytes at `pos`.
    fn packet(&mut self, edition: Edition, total: usize) -> Step {
        let p = &self.buf[self.pos..self.pos + total];
        let (id, id_len) = id_of(&p[4..21]);
        let mut info = PacketInfo {
            offset: self.offset(),
            len: total,
            edition,
            command: p[2],
            response: p[3],
            encryption: p[21],
            id,
            id_len: id_len as u8,
            time_ms: None,
            serial: None,
        };
        let data = &p[HEADER_LEN..total - 1];
        let fail = |kind: DecodeErrorKind, reason: String| DecodeError {
            offset: info.offset,
            len: total as u64,
            kind,
            edition: Some(edition),
            command: Some(info.command),
            vin: Some(String::from_utf8_lossy(&id[..id_len]).into_owned())
                .filter(|v| !v.is_empty()),
            reason,
        };
        if !data.is_empty() && info.encryption != super::ENCRYPTION_NONE {
            let how = match info.encryption {
                0x02 => "RSA",
                0x03 => "AES",
                0x04 => "SM2",
                0x05 => "SM4",
                0xFE => "marked abnormal",
                _ => "marked invalid",
            };
            let e = fail(
                DecodeErrorKind::Encrypted,
                format!(
                    "the data unit is encrypted (encryption byte {:02X}, {how}) and cannot be read",
                    info.encryption
                ),
            );
            return self.error(e);
        }
        let has_time = matches!(
            info.command,
            command::VEHICLE_LOGIN
                | command::REALTIME
                | command::REISSUE
                | command::VEHICLE_LOGOUT
                | command::PLATFORM_LOGIN
                | command::PLATFORM_LOGOUT
        );
        if !info.is_command() {
            // A reply: its time (when it kept one) is informative; nothing else is read.
            if has_time && data.len() >= 6 {
                info.time_ms = time_to_utc_ms(data[..6].try_into().expect("6 bytes")).ok();
            }
            self.counts.replies += 1;
            self.counts.by_command[usize::from(info.command)] += 1;
            return Step::Packet(info);
        }
        if has_time {
            if data.len() < 6 {
                let e = fail(
                    DecodeErrorKind::Layout,
                    format!(
                        "the data unit has {} bytes, too few for its time",
                        data.len()
                    ),
                );
                return self.error(e);
            }
            match time_to_utc_ms(data[..6].try_into().expect("6 bytes")) {
                Ok(t) => info.time_ms = Some(t),
                Err(reason) => {
                    let e = fail(DecodeErrorKind::Time, reason);
                    return self.error(e);
                }
            }
        }
        let checked = match info.command {
            command::VEHICLE_LOGIN => login_len(edition, data).map(|()| serial(data)),
            command::VEHICLE_LOGOUT | command::PLATFORM_LOGOUT => {
                exact_len(data, 8).map(|()| serial(data))
            }
            command::PLATFORM_LOGIN => exact_len(data, 41).map(|()| serial(data)),
            command::REALTIME | command::REISSUE => {
                let (pos, total) = (self.pos, total);
                match self.realtime(edition, pos + HEADER_LEN, pos + total - 1) {
                    Ok(true) => {
                        self.vin.clear();
                        self.vin.push_str(info.id());
                        if self.vin.is_empty() {
                            let e = fail(
                                DecodeErrorKind::Layout,
                                "the report has an empty VIN".to_owned(),
                            );
                            return self.error(e);
                        }
                        self.counts.frames += 1;
                        self.counts.by_command[usize::from(info.command)] += 1;
                        return Step::Frame(info);
                    }
                    Ok(false) => {
                        self.counts.no_frame += 1;
                        Ok(None)
                    }
                    Err(reason) => Err(reason),
                }
            }
            _ => Ok(None),
        };
        match checked {
            Ok(serial) => {
                info.serial = serial;
                self.counts.by_command[usize::from(info.command)] += 1;
                Step::Packet(info)
            }
            Err(reason) => {
                let e = fail(DecodeErrorKind::Layout, reason);
                self.error(e)
            }
        }
    }

    /// Reads the items of a realtime/reissue data unit `buf[start..end]` into the frame
    /// buffers. `Ok(true)` when the packet makes a frame.
    fn realtime(&mut self, edition: Edition, start: usize, end: usize) -> Result<bool, String> {
        let v2016 = edition == Edition::V2016;
        let d = &self.buf[start..end];
        let mut r = Reader { d, p: 6 };
        let mut seen = Seen::default();
        self.pack = [f64::NAN; 3];
        self.alarm_flags = None;
        self.cells.clear();
        self.temps.clear();
        while r.p < d.len() {
            let item_at = r.p;
            let t = r.u8()?;
            let once = |flag: &mut bool| {
                if std::mem::replace(flag, true) {
                    Err(format!(
                        "item {t:02X} at data offset {item_at} appears twice in the packet"
                    ))
                } else {
                    Ok(())
                }
            };
            match (t, v2016) {
                (0x01, _) => {
                    once(&mut seen.vehicle)?;
                    let b = r.take(if v2016 { 20 } else { 18 }, t, item_at)?;
                    let (vmax, imax, ioff) = if v2016 {
                        (10_000, 20_000, 10_000.0)
                    } else {
                        (60_000, 60_000, 30_000.0)
                    };
                    let v = word(b, 9);
                    let i = word(b, 11);
                    self.pack[0] = if v <= vmax {
                        f64::from(v) / 10.0
                    } else {
                        f64::NAN
                    };
                    self.pack[1] = if i <= imax {
                        (f64::from(i) - ioff) / 10.0
                    } else {
                        f64::NAN
                    };
                    self.pack[2] = if b[13] <= 100 {
                        f64::from(b[13])
                    } else {
                        f64::NAN
                    };
                }
                (0x02, _) => {
                    let n = r.count(t, item_at)?;
                    r.take(n * if v2016 { 12 } else { 10 }, t, item_at)?;
                }
                (0x03, true) => {
                    let head = r.peek(8, t, item_at)?;
                    let probes = r.count_word(word(head, 6), t, item_at)?;
                    r.take(18 + probes, t, item_at)?;
                }
                (0x03, false) => {
                    r.take(12, t, item_at)?;
                }
                (0x04, _) => {
                    r.take(if v2016 { 5 } else { 2 }, t, item_at)?;
                }
                (0x05, _) => {
                    r.take(if v2016 { 9 } else { 10 }, t, item_at)?;
                }
                (0x06, true) => {
                    r.take(14, t, item_at)?;
                }
                (0x07, true) | (0x06, false) => {
                    once(&mut seen.alarm)?;
                    let b = r.take(5, t, item_at)?;
                    let flags = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
                    self.alarm_flags = (flags < 0xFFFF_FFFE).then_some(flags);
                    for _ in 0..4 {
                        let n = r.count(t, item_at)?;
                        r.take(4 * n, t, item_at)?;
                    }
                    if !v2016 {
                        let n = r.count(t, item_at)?;
                        r.take(2 * n, t, item_at)?;
                    }
                }
                (0x08, true) => {
                    once(&mut seen.cells)?;
                    let n = r.count(t, item_at)?;
                    self.entries.clear();
                    for _ in 0..n {
                        let h = r.take(10, t, item_at)?;
                        let (group, total, first, m) = (h[0], word(h, 5), word(h, 7), h[9]);
                        if total == 0 || usize::from(total) > super::MAX_DATA_LEN {
                            return Err(format!(
                                "subsystem {group}: total cell count {total} is out of range \
                                 (1-65531)"
                            ));
                        }
                        if first == 0 || m == 0 {
                            return Err(format!(
                                "subsystem {group}: an entry of {m} cells from cell {first} \
                                 (cells are numbered from 1, entries hold 1-200)"
                            ));
                        }
                        let pos = r.p;
                        r.take(2 * usize::from(m), t, item_at)?;
                        self.entries.push(Entry {
                            group,
                            first,
                            total,
                            n: usize::from(m),
                            pos,
                        });
                    }
                    order_and_tile(&mut self.entries, true)?;
                    for e in &self.entries {
                        self.cells.extend(
                            d[e.pos..e.pos + 2 * e.n]
                                .chunks_exact(2)
                                .map(|w| cell_volts(u16::from_be_bytes([w[0], w[1]]))),
                        );
                    }
                }
                (0x07, false) => {
                    once(&mut seen.cells)?;
                    let n = r.count(t, item_at)?;
                    self.entries.clear();
                    for _ in 0..n {
                        let h = r.take(7, t, item_at)?;
                        let group = h[0];
                        let m = r.count_word(word(h, 5), t, item_at)?;
                        let pos = r.p;
                        r.take(2 * m, t, item_at)?;
                        self.entries.push(Entry {
                            group,
                            first: 1,
                            total: m as u16,
                            n: m,
                            pos,
                        });
                    }
                    order_and_tile(&mut self.entries, false)?;
                    for e in &self.entries {
                        self.cells.extend(
                            d[e.pos..e.pos + 2 * e.n]
                                .chunks_exact(2)
                                .map(|w| cell_volts(u16::from_be_bytes([w[0], w[1]]))),
                        );
                    }
                }
                (0x09, true) | (0x08, false) => {
                    once(&mut seen.temps)?;
                    let n = r.count(t, item_at)?;
                    self.entries.clear();
                    for _ in 0..n {
                        let h = r.take(3, t, item_at)?;
                        let group = h[0];
                        let m = r.count_word(word(h, 1), t, item_at)?;
                        let pos = r.p;
                        r.take(m, t, item_at)?;
                        self.entries.push(Entry {
                            group,
                            first: 1,
                            total: m as u16,
                            n: m,
                            pos,
                        });
                    }
                    order_and_tile(&mut self.entries, false)?;
                    for e in &self.entries {
                        self.temps
                            .extend(d[e.pos..e.pos + e.n].iter().map(|&b| probe_celsius(b)));
                    }
                }
                (0x30, false) => {
                    let n = r.count(t, item_at)?;
                    for _ in 0..n {
                        let h = r.take(12, t, item_at)?;
                        let probes = r.count_word(word(h, 10), t, item_at)?;
                        r.take(probes, t, item_at)?;
                    }
                }
                (0x31, false) => {
                    let h = r.take(7, t, item_at)?;
                    let cells = r.count_word(word(h, 5), t, item_at)?;
                    r.take(2 * cells, t, item_at)?;
                    let h = r.take(2, t, item_at)?;
                    let probes = r.count_word(word(h, 0), t, item_at)?;
                    r.take(probes, t, item_at)?;
                }
                (0x32, false) => {
                    r.take(18, t, item_at)?;
                }
                (0x80..=0xFE, _) => {
                    let h = r.take(2, t, item_at)?;
                    r.take(usize::from(word(h, 0)), t, item_at)?;
                }
                (0xFF, false) => {
                    r.take(1, t, item_at)?;
                    for part in ["R", "S"] {
                        let h = r.take(2, t, item_at)?;
                        let n = usize::from(word(h, 0));
                        if r.d.len() - r.p < n {
                            return Err(format!(
                                "signature at data offset {item_at}: {part} declares {n} bytes, \
                                 {} are left",
                                r.d.len() - r.p
                            ));
                        }
                        r.p += n;
                    }
                    if r.p != d.len() {
                        return Err(format!(
                            "signature at data offset {item_at} ends at {} but the data unit \
                             goes on to {}",
                            r.p,
                            d.len()
                        ));
                    }
                }
                _ => {
                    let what = match t {
                        0x0A..=0x2F if v2016 => "a platform-exchange custom item",
                        0x09..=0x2F => "a platform-exchange custom item",
                        _ => "a reserved item type",
                    };
                    return Err(format!(
                        "item type {t:02X} at data offset {item_at} is {what} of {edition} \
                         with no length field: the rest of the packet cannot be read"
                    ));
                }
            }
        }
        Ok(seen.cells && seen.temps && !self.cells.is_empty() && !self.temps.is_empty())
    }
}

/// A cursor over a data unit whose errors name the item being read.
struct Reader<'a> {
    d: &'a [u8],
    p: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.d.get(self.p).ok_or("the data unit ends early")?;
        self.p += 1;
        Ok(b)
    }

    fn peek(&self, n: usize, item: u8, at: usize) -> Result<&'a [u8], String> {
        self.d
            .get(self.p..self.p + n)
            .ok_or_else(|| self.short(n, item, at))
    }

    fn take(&mut self, n: usize, item: u8, at: usize) -> Result<&'a [u8], String> {
        let b = self.peek(n, item, at)?;
        self.p += n;
        Ok(b)
    }

    fn short(&self, n: usize, item: u8, at: usize) -> String {
        format!(
            "item {item:02X} at data offset {at} needs {n} more bytes at offset {}, the data \
             unit has {} left",
            self.p,
            self.d.len() - self.p
        )
    }

    /// A BYTE count; the markers `FE`/`FF` leave the list undefined.
    fn count(&mut self, item: u8, at: usize) -> Result<usize, String> {
        let n = self.u8()?;
        if n >= 0xFE {
            return Err(format!(
                "item {item:02X} at data offset {at}: the count at offset {} is the {} marker \
                 {n:02X}, so the list after it is undefined",
                self.p - 1,
                if n == 0xFE { "abnormal" } else { "invalid" }
            ));
        }
        Ok(usize::from(n))
    }

    /// A WORD count already read; the markers leave the list undefined.
    fn count_word(&self, n: u16, item: u8, at: usize) -> Result<usize, String> {
        if n >= 0xFFFE {
            return Err(format!(
                "item {item:02X} at data offset {at}: a count is the {} marker {n:04X}, so \
                 the list after it is undefined",
                if n == 0xFFFE { "abnormal" } else { "invalid" }
            ));
        }
        Ok(usize::from(n))
    }
}

fn word(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn cell_volts(raw: u16) -> f64 {
    if raw <= 60_000 {
        f64::from(raw) / 1000.0
    } else {
        f64::NAN
    }
}

fn probe_celsius(raw: u8) -> f64 {
    if raw <= 250 {
        f64::from(raw) - 40.0
    } else {
        f64::NAN
    }
}

/// Orders entries by group, then first cell; checks that each group's entries tile
/// 1…total (`split`: 2016 cell entries) or that each group appears once.
fn order_and_tile(entries: &mut [Entry], split: bool) -> Result<(), String> {
    if !entries.is_sorted_by_key(|e| (e.group, e.first)) {
        entries.sort_by_key(|e| (e.group, e.first));
    }
    let mut i = 0;
    while i < entries.len() {
        let group = entries[i].group;
        let mut j = i;
        while j < entries.len() && entries[j].group == group {
            j += 1;
        }
        let run = &entries[i..j];
        if !split && run.len() > 1 {
            return Err(format!(
                "number {group} appears {} times in one item",
                run.len()
            ));
        }
        let total = run[0].total;
        let mut next = 1usize;
        for e in run {
            if e.total != total {
                return Err(format!(
                    "subsystem {group}: its entries disagree on the total cell count \
                     ({total} and {})",
                    e.total
                ));
            }
            if usize::from(e.first) != next {
                return Err(format!(
                    "subsystem {group}: an entry starts at cell {} where cell {next} was \
                     expected (entries must tile 1-{total} without gap or overlap)",
                    e.first
                ));
            }
            next += e.n;
        }
        if next - 1 != usize::from(total) {
            return Err(format!(
                "subsystem {group}: its entries cover cells 1-{} of {total}",
                next - 1
            ));
        }
        i = j;
    }
    Ok(())
}

fn exact_len(data: &[u8], n: usize) -> Result<(), String> {
    if data.len() == n {
        Ok(())
    } else {
        Err(format!(
            "the data unit has {} bytes where this command has {n}",
            data.len()
        ))
    }
}

fn serial(data: &[u8]) -> Option<u16> {
    Some(word(data, 6))
}

/// Checks a vehicle login's length against its own counts (facts §4.1).
fn login_len(edition: Edition, data: &[u8]) -> Result<(), String> {
    let expected = match edition {
        Edition::V2016 => {
            if data.len() < 30 {
                return exact_len(data, 30);
            }
            30 + usize::from(data[28]) * usize::from(data[29])
        }
        Edition::V2025 => {
            if data.len() < 29 {
                return exact_len(data, 29);
            }
            let n = usize::from(data[28]);
            match data.get(29..29 + n) {
                Some(packs) => 29 + n + 24 * packs.iter().map(|&m| usize::from(m)).sum::<usize>(),
                None => return exact_len(data, 29 + n),
            }
        }
    };
    exact_len(data, expected)
}

fn is_start_byte(b: u8) -> bool {
    b == b'#' || b == b'$'
}

/// Index of the first start-symbol candidate: two equal start bytes, or a start byte that
/// ends the slice.
fn find_start(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr2(b'#', b'$', &b[from..]) {
        let i = from + i;
        match b.get(i + 1) {
            None => return Some(i),
            Some(&n) if n == b[i] => return Some(i),
            Some(_) => from = i + 1,
        }
    }
    None
}

/// The id without its padding (trailing NUL or spaces), and its length.
fn id_of(raw: &[u8]) -> ([u8; 17], usize) {
    let mut id = [0u8; 17];
    id.copy_from_slice(&raw[..17]);
    let len = raw[..17]
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |i| i + 1);
    (id, len)
}

/// Whether the header bytes that have arrived (up to 24) can begin a packet.
fn plausible_header(edition: Edition, h: &[u8]) -> bool {
    let v2025 = edition == Edition::V2025;
    if let Some(&cmd) = h.get(2) {
        let known = matches!(cmd, 0x01..=0x08 | 0x80..=0x82 | 0xC0..=0xFE)
            || (v2025 && matches!(cmd, 0x09..=0x0B));
        if !known {
            return false;
        }
    }
    if let Some(&resp) = h.get(3) {
        let known = matches!(resp, 0x01..=0x03 | 0xFE) || (v2025 && matches!(resp, 0x04..=0x07));
        if !known {
            return false;
        }
    }
    let id = &h[h.len().min(4)..h.len().min(21)];
    // Printable ASCII, then only padding.
    let text = id.iter().position(|&b| b == 0).map_or(id, |i| &id[..i]);
    if !text.iter().all(|b| (0x20..=0x7E).contains(b)) || !id[text.len()..].iter().all(|&b| b == 0)
    {
        return false;
    }
    if let Some(&enc) = h.get(21) {
        let known =
            matches!(enc, 0x01..=0x03 | 0xFE | 0xFF) || (v2025 && matches!(enc, 0x04 | 0x05));
        if !known {
            return false;
        }
    }
    if h.len() >= 24 && usize::from(word(h, 22)) > MAX_DATA_LEN {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packet bytes from hex with spaces; `<VIN>` expands to the facts file's example VIN.
    fn hex(s: &str) -> Vec<u8> {
        let s = s.replace("<VIN 17>", &hex_of(b"LSPECEXAMPLE00001"));
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02X} ")).collect()
    }

    pub(super) const REALTIME_2016: &str = "23 23 02 FE <VIN 17> 01 00 3C  19 03 0A 07 14 00
        01  01 03 01 01 6D 00 01 D6 19 0D E6 26 95 2A 01 2E 12 C0 14 00
        07  01 00 00 04 00 00 00 00 00
        08  01  01 00 4A 26 95 00 02 00 01 02 0E 80 FF FF
        09  01  01 00 02 41 FF
        00";

    pub(super) const REALTIME_2025: &str = "24 24 02 FE <VIN 17> 01 00 44  19 03 0A 07 14 00
        01  01 03 01 01 6D 00 01 D6 19 0D E6 74 B5 2A 01 2E 12 C0
        06  01 00 00 04 00 00 00 00 00 01 0A 01
        07  01  01 00 4A 74 B5 00 02 0E 80 FF FF
        08  01  01 00 02 41 FF
        FF 01 00 02 A1 A2 00 02 B1 B2  94";

    fn events(bytes: &[u8]) -> Vec<String> {
        let mut d = Decoder::new();
        d.push(bytes);
        d.finish();
        let mut out = Vec::new();
        while let Some(e) = d.next() {
            out.push(match e {
                Event::Frame(i, f) => format!("frame@{} {f:?}", i.offset),
                Event::Packet(i) => format!("packet@{} {:02X}", i.offset, i.command),
                Event::Error(e) => format!("error {} {e}", e.kind.name()),
            });
        }
        out
    }

    #[test]
    fn worked_examples_decode() {
        for (text, edition) in [
            (REALTIME_2016, Edition::V2016),
            (REALTIME_2025, Edition::V2025),
        ] {
            let bytes = hex(text);
            let mut d = Decoder::new();
            d.push(&bytes);
            let Some(Event::Frame(info, f)) = d.next() else {
                panic!("no frame for {edition}");
            };
            assert_eq!(info.edition, edition);
            assert_eq!(info.len, bytes.len());
            assert_eq!(f.vin, "LSPECEXAMPLE00001");
            assert_eq!(f.timestamp_ms, 1_741_562_400_000);
            assert_eq!(f.pack_voltage, 355.8);
            assert_eq!(f.pack_current, -12.3);
            assert_eq!(f.soc, 42.0);
            assert_eq!(f.cell_voltages[0], 3.712);
            assert!(f.cell_voltages[1].is_nan());
            assert_eq!(f.temperatures[0], 25.0);
            assert!(f.temperatures[1].is_nan());
            assert_eq!(f.alarm_flags, Some(0x400));
            assert!(d.next().is_none());
        }
    }

    #[test]
    fn heartbeat_example() {
        let bytes = hex("23 23 07 FE <VIN 17> 01 00 00 C8");
        assert_eq!(events(&bytes), ["packet@0 07"]);
    }

    #[test]
    fn wrong_checksum_is_reported_and_the_next_packet_read() {
        let mut bytes = hex(REALTIME_2016);
        let n = bytes.len();
        bytes[n - 1] ^= 0x55;
        bytes.extend(hex(REALTIME_2016));
        let ev = events(&bytes);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(ev[0].starts_with("error checksum byte offset 0, realtime report"));
        assert!(ev[1].starts_with(&format!("frame@{n}")));
    }
}
