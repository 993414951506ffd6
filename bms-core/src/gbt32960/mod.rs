//! GB/T 32960.3 vehicle telemetry: the packet stream a vehicle sends its platform over TCP
//! (`docs/GBT32960.md` holds the protocol facts and the choices this module makes).
//!
//! - [`Decoder`] turns bytes that arrive in arbitrary pieces into packets and, from realtime
//!   and reissue reports, [`FrameRef`](crate::FrameRef)s in the SPEC §2 layout. Bad packets
//!   are reported with their stream offset and skipped; they never end the stream.
//! - [`encode`] writes packets: the simulator's captures, the gateway's responses, and the
//!   tests' second reading of the standard (it is written from the facts file, not from
//!   the decoder, so that round trips compare two independent readings).

mod decode;
pub mod encode;
mod read;

pub use decode::*;
pub use read::{CaptureReport, looks_like_capture, read_capture, read_capture_from};

/// The edition of the standard a packet follows, told by its start symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edition {
    /// GB/T 32960.3-2016, start symbol `##`.
    V2016,
    /// GB/T 32960.3-2025, start symbol `$$`.
    V2025,
}

impl Edition {
    /// The start byte, sent twice at the beginning of every packet.
    pub const fn start_byte(self) -> u8 {
        match self {
            Edition::V2016 => b'#',
            Edition::V2025 => b'$',
        }
    }

    /// The edition whose start byte is `b`.
    pub const fn from_start_byte(b: u8) -> Option<Edition> {
        match b {
            b'#' => Some(Edition::V2016),
            b'$' => Some(Edition::V2025),
            _ => None,
        }
    }

    /// `2016` or `2025`.
    pub const fn year(self) -> u16 {
        match self {
            Edition::V2016 => 2016,
            Edition::V2025 => 2025,
        }
    }
}

impl std::fmt::Display for Edition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GB/T 32960.3-{}", self.year())
    }
}

/// Command IDs (facts §2).
pub mod command {
    pub const VEHICLE_LOGIN: u8 = 0x01;
    pub const REALTIME: u8 = 0x02;
    pub const REISSUE: u8 = 0x03;
    pub const VEHICLE_LOGOUT: u8 = 0x04;
    pub const PLATFORM_LOGIN: u8 = 0x05;
    pub const PLATFORM_LOGOUT: u8 = 0x06;
    pub const HEARTBEAT: u8 = 0x07;
    pub const TIME_SYNC: u8 = 0x08;
}

/// Response flags (facts §1, offset 3).
pub mod response {
    /// A command packet, sent by the initiator (every uplink telemetry packet).
    pub const COMMAND: u8 = 0xFE;
    pub const SUCCESS: u8 = 0x01;
    pub const ERROR: u8 = 0x02;
    pub const VIN_DUPLICATE: u8 = 0x03;
    /// 2025 only.
    pub const VIN_UNKNOWN: u8 = 0x04;
}

/// Encryption byte of the data unit (facts §1, offset 21): `01` is the only one we read.
pub const ENCRYPTION_NONE: u8 = 0x01;

/// The largest data-unit length the standard allows (facts §1).
pub const MAX_DATA_LEN: usize = 65531;

/// Bytes of a packet around its data unit: start 2, command 1, response 1, id 17,
/// encryption 1, length 2 … BCC 1.
pub const PACKET_OVERHEAD: usize = 25;
