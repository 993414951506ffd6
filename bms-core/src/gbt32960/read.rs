//! Captures: a file (or any reader) of concatenated packets, as a TCP stream records them,
//! read into [`Frames`] like the other frame readers.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DecodeCounts, Decoder, Event};
use crate::error::{BmsError, Location, Result};
use crate::frame::Frames;
use crate::io::{ReadMode, ReadReport, Reject};

/// What reading a capture gave: the frames with the usual counts and rejects, and the
/// decoder's counts of packets by command and errors by kind.
///
/// `read` counts the frames and the refused packets (or byte runs); a reject's `line` (and
/// the `line` each frame remembers) is the 1-based ordinal of that packet among them, and
/// its reason starts with the stream's byte offset.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureReport {
    pub frames: ReadReport<Frames>,
    pub counts: DecodeCounts,
}

/// Reads a capture file.
pub fn read_capture(path: &Path, mode: ReadMode) -> Result<CaptureReport> {
    let file = std::fs::File::open(path).map_err(|e| BmsError::io(path, e))?;
    read_capture_from(file, Some(path), mode)
}

/// Reads a capture from any reader, in pieces: memory stays bounded by the read size and
/// one packet, whatever the capture's length. In strict mode the first refused packet is
/// an error; in lenient mode it is a reject and reading goes on.
pub fn read_capture_from<R: Read>(
    mut reader: R,
    file: Option<&Path>,
    mode: ReadMode,
) -> Result<CaptureReport> {
    let mut decoder = Decoder::new();
    let mut frames = Frames::new();
    let mut rejects = Vec::new();
    let mut ordinal = 0u64;
    let mut chunk = vec![0u8; 1 << 18];
    let io_err = |e: std::io::Error| match file {
        Some(p) => BmsError::io(p, e),
        None => BmsError::io(PathBuf::from("<stdin>"), e),
    };
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        if n == 0 {
            decoder.finish();
        } else {
            decoder.push(&chunk[..n]);
        }
        while let Some(event) = decoder.next() {
            match event {
                Event::Frame(_, frame) => {
                    ordinal += 1;
                    frames.push(frame, ordinal);
                }
                Event::Packet(_) => {}
                Event::Error(e) => {
                    ordinal += 1;
                    match mode {
                        ReadMode::Strict => {
                            return Err(BmsError::parse(
                                Location::new(file.map(Path::to_path_buf)).line(ordinal),
                                e.to_string(),
                            ));
                        }
                        ReadMode::Lenient => rejects.push(Reject {
                            line: ordinal,
                            reason: e.to_string(),
                        }),
                    }
                }
            }
        }
        if n == 0 {
            break;
        }
    }
    Ok(CaptureReport {
        frames: ReadReport {
            read: ordinal,
            accepted: frames.len() as u64,
            data: frames,
            rejects,
        },
        counts: decoder.counts().clone(),
    })
}

/// Whether `head` (a file's first bytes) begins with a GB/T 32960 start symbol.
pub fn looks_like_capture(head: &[u8]) -> bool {
    matches!(head, [b'#', b'#', ..] | [b'$', b'$', ..])
}
