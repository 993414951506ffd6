//! A writer for large, write-once output files (`events.jsonl` of `bms predict --out`).
//!
//! On Linux the data goes to the disk with `O_DIRECT` from one reused, aligned buffer, so
//! hundreds of megabytes of events are not copied into the page cache first: on the
//! virtual machines these jobs run on, that copy into freshly allocated cache pages was
//! the largest single cost of a batch run (a fifth of its CPU time), and it ran on the
//! thread that should have been reading the next chunk. Where the file system refuses
//! direct I/O (tmpfs, some network file systems) the same buffer is written the usual
//! way. Either way the bytes in the file are exactly the bytes given to
//! [`BulkWriter::write_all`].

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Direct I/O needs buffer addresses, file offsets and lengths aligned to the device's
/// logical block size; 4096 covers 512-byte and 4 KiB devices.
const ALIGN: usize = 4096;
/// Bytes handed to the kernel per write.
const CAPACITY: usize = 4 << 20;

/// See the module documentation.
pub struct BulkWriter {
    file: File,
    /// The path, to reopen without `O_DIRECT` when a write is refused.
    path: std::path::PathBuf,
    direct: bool,
    /// `CAPACITY + ALIGN` bytes; the aligned window starts at `offset`.
    mem: Vec<u8>,
    offset: usize,
    len: usize,
    /// Bytes already in the file.
    written: u64,
}

impl BulkWriter {
    /// Writes into `path` (an existing, empty file, e.g. an [`bms_core::io::AtomicFile`]'s
    /// temporary file), directly when `direct` and the file system allows it.
    pub fn open(path: &Path, direct: bool) -> io::Result<Self> {
        let (file, direct) = match direct.then(|| open_direct(path)).flatten() {
            Some(f) => (f, true),
            None => (std::fs::OpenOptions::new().write(true).open(path)?, false),
        };
        let mem = vec![0u8; CAPACITY + ALIGN];
        let offset = mem.as_ptr().align_offset(ALIGN);
        Ok(BulkWriter {
            file,
            path: path.to_path_buf(),
            direct,
            mem,
            offset,
            len: 0,
            written: 0,
        })
    }

    /// Whether writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (CAPACITY - self.len).min(data.len());
            let at = self.offset + self.len;
            self.mem[at..at + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len == CAPACITY {
                self.flush_buffer(CAPACITY)?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered and gives the file its exact length; returns that length.
    pub fn finish(mut self) -> io::Result<u64> {
        let len = self.len;
        if len > 0 {
            if self.direct {
                // The last block is written whole (zero padding), then cut to length.
                let padded = len.div_ceil(ALIGN) * ALIGN;
                let at = self.offset;
                self.mem[at + len..at + padded].fill(0);
                self.flush_buffer(padded)?;
                self.written -= (padded - len) as u64;
                self.file.set_len(self.written)?;
            } else {
                self.flush_buffer(len)?;
            }
        }
        Ok(self.written)
    }

    /// Writes the first `n` buffered bytes (a multiple of [`ALIGN`] when direct) and
    /// empties the buffer.
    fn flush_buffer(&mut self, n: usize) -> io::Result<()> {
        let (a, b) = (self.offset, self.offset + n);
        if self.direct {
            match write_aligned(&mut self.file, &self.mem[a..b]) {
                Ok(()) => {}
                // Accepted at open, refused at write (some file systems): nothing of this
                // buffer is in the file yet; continue through the page cache.
                Err(e)
                    if e.raw_os_error() == Some(EINVAL)
                        && self.written.is_multiple_of(ALIGN as u64) =>
                {
                    let mut f = std::fs::OpenOptions::new().write(true).open(&self.path)?;
                    f.set_len(self.written)?;
                    use std::io::Seek;
                    f.seek(io::SeekFrom::Start(self.written))?;
                    self.file = f;
                    self.direct = false;
                    self.file.write_all(&self.mem[a..b])?;
                }
                Err(e) => return Err(e),
            }
        } else {
            self.file.write_all(&self.mem[a..b])?;
        }
        self.written += n as u64;
        self.len = 0;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
const EINVAL: i32 = libc::EINVAL;
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = 22;

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

/// `write_all` that only ever continues after a whole number of blocks (a short direct
/// write that ends mid-block cannot be continued at an unaligned offset).
fn write_aligned(file: &mut File, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match file.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) if n == data.len() || n % ALIGN == 0 => data = &data[n..],
            Ok(n) => {
                return Err(io::Error::other(format!(
                    "short direct write of {n} bytes (not a whole block)"
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of awkward sizes, across buffer borders, give back exactly the same bytes,
    /// with and without direct I/O.
    fn round_trip(direct: bool, total: usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"").unwrap();
        let mut expected = Vec::with_capacity(total);
        let mut w = BulkWriter::open(&path, direct).unwrap();
        let mut i = 0u64;
        while expected.len() < total {
            let piece: Vec<u8> = format!(
                "{{\"n\":{i},\"pad\":\"{}\"}}\n",
                "x".repeat((i % 5000) as usize)
            )
            .into_bytes();
            let piece = &piece[..piece.len().min(total - expected.len())];
            w.write_all(piece).unwrap();
            expected.extend_from_slice(piece);
            i += 1;
        }
        if direct && cfg!(target_os = "linux") {
            // The test directory is on an ordinary disk here; say so if it is not.
            eprintln!("direct I/O in use: {}", w.is_direct());
        }
        assert_eq!(w.finish().unwrap(), total as u64);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "file differs from what was written");
    }

    #[test]
    fn direct_writes_keep_every_byte() {
        round_trip(true, 3 * CAPACITY + 12_345);
        round_trip(true, CAPACITY);
        round_trip(true, 1);
    }

    #[test]
    fn buffered_writes_keep_every_byte() {
        round_trip(false, 2 * CAPACITY + 7);
    }

    #[test]
    fn an_empty_file_stays_empty() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("e");
            std::fs::write(&path, b"").unwrap();
            let w = BulkWriter::open(&path, direct).unwrap();
            assert_eq!(w.finish().unwrap(), 0);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        }
    }
}
