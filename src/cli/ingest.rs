//! `bms ingest`: a GB/T 32960 capture (concatenated packets, as a TCP stream carries them)
//! → frames, streamed: memory stays bounded whatever the capture's length.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bms_core::gbt32960::{DecodeError, Decoder, Event};
use bms_core::io::AtomicFile;
use bms_core::io::frame_csv::{FrameCsvWriter, FrameWriteError};
use bms_core::io::parquet::FramesParquetWriter;
use bms_core::{FrameRef, Frames};
use clap::Args;

use super::{FileKind, ensure_parent, is_stdio, output_kind, shown};

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The capture: a file of concatenated GB/T 32960 packets (2016 `##` and 2025 `$$`
    /// editions, told per packet); `-` reads standard input.
    #[arg(long, short, env = "BMS_INPUT")]
    pub input: PathBuf,

    /// Frames to write: `.csv` (SPEC §2 columns; every frame must have the same numbers of
    /// cells and probes) or `.parquet` (list columns, any mix); `-` writes CSV to standard
    /// output. Without it, only the counts are printed.
    #[arg(long, short)]
    pub out: Option<PathBuf>,

    /// Write every refused packet as `offset,kind,command,vin,reason` CSV here.
    #[arg(long)]
    pub rejects: Option<PathBuf>,

    /// Stop at the first refused packet (exit 1) instead of reporting it and going on.
    #[arg(long)]
    pub strict: bool,
}

/// Frames kept before they are written out.
const BATCH_FRAMES: usize = 8192;
/// Read size.
const CHUNK: usize = 1 << 18;

enum FrameOut {
    None,
    Csv {
        file: Option<AtomicFile>,
        w: Box<dyn Write>,
        writer: Option<FrameCsvWriter>,
    },
    Parquet(Box<FramesParquetWriter>),
}

impl FrameOut {
    fn open(path: Option<&Path>) -> Result<FrameOut> {
        let Some(path) = path else {
            return Ok(FrameOut::None);
        };
        if is_stdio(path) {
            return Ok(FrameOut::Csv {
                file: None,
                w: Box::new(BufWriter::with_capacity(1 << 16, std::io::stdout())),
                writer: None,
            });
        }
        ensure_parent(path)?;
        Ok(match output_kind(path)? {
            FileKind::Csv => {
                let mut file = AtomicFile::create(path)?;
                let handle = file
                    .file()
                    .try_clone()
                    .with_context(|| path.display().to_string())?;
                FrameOut::Csv {
                    file: Some(file),
                    w: Box::new(BufWriter::with_capacity(1 << 16, handle)),
                    writer: None,
                }
            }
            FileKind::Parquet => FrameOut::Parquet(Box::new(FramesParquetWriter::create(path)?)),
            FileKind::Capture => unreachable!("output_kind gives CSV or Parquet"),
        })
    }

    fn write(&mut self, frames: &Frames, out: &Path) -> Result<()> {
        match self {
            FrameOut::None => Ok(()),
            FrameOut::Parquet(p) => Ok(p.write(frames.iter())?),
            FrameOut::Csv { w, writer, .. } => {
                for f in frames.iter() {
                    if writer.is_none() {
                        // The first frame's shape makes the header; alarm flags are always
                        // a column (empty where a packet had no alarm item).
                        let (wr, header) =
                            FrameCsvWriter::new(f.cell_voltages.len(), f.temperatures.len(), true);
                        w.write_all(header.as_bytes()).with_context(|| {
                            format!("writing {}", shown(out, "<stdout>").display())
                        })?;
                        *writer = Some(wr);
                    }
                    let wr = writer.as_mut().expect("set above");
                    write_csv_frame(wr, w, &f, out)?;
                }
                Ok(())
            }
        }
    }

    fn finish(self, out: &Path) -> Result<()> {
        match self {
            FrameOut::None => Ok(()),
            FrameOut::Parquet(p) => Ok((*p).finish()?),
            FrameOut::Csv {
                file,
                mut w,
                writer,
            } => {
                if writer.is_none() {
                    bail!(
                        "{}: the capture gave no frame, and a frame CSV header needs the cell \
                         and probe counts of one (nothing written)",
                        shown(out, "<stdout>").display()
                    );
                }
                w.flush()
                    .with_context(|| format!("writing {}", shown(out, "<stdout>").display()))?;
                drop(w);
                if let Some(f) = file {
                    f.commit()?;
                }
                Ok(())
            }
        }
    }
}

fn write_csv_frame(
    wr: &mut FrameCsvWriter,
    w: &mut Box<dyn Write>,
    f: &FrameRef<'_>,
    out: &Path,
) -> Result<()> {
    wr.write_frame(w, f).map_err(|e| match e {
        FrameWriteError::Io(e) => {
            anyhow::anyhow!("writing {}: {e}", shown(out, "<stdout>").display())
        }
        FrameWriteError::Bms(e) => anyhow::anyhow!(
            "{}: {e} (VIN {} at {}): frame CSV needs one shape for every frame; write \
             Parquet (-o frames.parquet) for a fleet of mixed packs",
            shown(out, "<stdout>").display(),
            f.vin,
            f.timestamp_ms
        ),
    })
}

struct RejectOut {
    w: Option<(AtomicFile, BufWriter<File>)>,
}

impl RejectOut {
    fn open(path: Option<&Path>) -> Result<RejectOut> {
        let Some(path) = path else {
            return Ok(RejectOut { w: None });
        };
        ensure_parent(path)?;
        let mut file = AtomicFile::create(path)?;
        let handle = file
            .file()
            .try_clone()
            .with_context(|| path.display().to_string())?;
        let mut w = BufWriter::new(handle);
        w.write_all(b"offset,kind,command,vin,reason\n")?;
        Ok(RejectOut { w: Some((file, w)) })
    }

    fn push(&mut self, e: &DecodeError) -> Result<()> {
        if let Some((_, w)) = &mut self.w {
            writeln!(
                w,
                "{},{},{},{},\"{}\"",
                e.offset,
                e.kind.name(),
                e.command.map(|c| format!("{c:02X}")).unwrap_or_default(),
                csv_text(e.vin.as_deref().unwrap_or("")),
                e.reason.replace('"', "\"\"")
            )?;
        }
        Ok(())
    }

    fn finish(self, path: Option<&Path>) -> Result<()> {
        if let Some((file, mut w)) = self.w {
            w.flush()
                .with_context(|| format!("writing {}", path.expect("open").display()))?;
            drop(w);
            file.commit()?;
        }
        Ok(())
    }
}

/// A VIN as a CSV field: quoted when it holds a comma, quote or line break.
fn csv_text(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

pub fn run(args: IngestArgs) -> Result<()> {
    let input = shown(&args.input, "<stdin>");
    let mut reader: Box<dyn Read> = if is_stdio(&args.input) {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            File::open(&args.input).with_context(|| format!("cannot open {}", input.display()))?,
        )
    };
    let out_path = args.out.as_deref();
    let mut out = FrameOut::open(out_path)?;
    let mut rejects = RejectOut::open(args.rejects.as_deref())?;
    let mut decoder = Decoder::new();
    let mut batch = Frames::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut shown_errors = 0usize;
    let mut last_progress = std::time::Instant::now();
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("reading {}: {e}", input.display()),
        };
        if n == 0 {
            decoder.finish();
        } else {
            decoder.push(&chunk[..n]);
        }
        while let Some(event) = decoder.next() {
            match event {
                Event::Frame(_, f) => batch.push(f, 0),
                Event::Packet(_) => {}
                Event::Error(e) => {
                    if args.strict {
                        bail!("{}: {e}", input.display());
                    }
                    if shown_errors < 5 {
                        eprintln!("{}: refused: {e}", input.display());
                        shown_errors += 1;
                    }
                    rejects.push(&e)?;
                }
            }
        }
        if batch.len() >= BATCH_FRAMES || (n == 0 && !batch.is_empty()) {
            if let Some(p) = out_path {
                out.write(&batch, p)?;
            }
            batch = Frames::new();
        }
        if last_progress.elapsed().as_secs() >= 2 {
            let c = decoder.counts();
            eprintln!(
                "{}: {} MB, {} frames, {} refused so far",
                input.display(),
                c.bytes / 1_000_000,
                c.frames,
                c.errors
            );
            last_progress = std::time::Instant::now();
        }
        if n == 0 {
            break;
        }
    }
    let counts = decoder.counts().clone();
    eprintln!("{}: {} bytes, {counts}", input.display(), counts.bytes);
    if counts.errors > shown_errors as u64 {
        eprintln!(
            "{}: {} more refused packets not shown{}",
            input.display(),
            counts.errors - shown_errors as u64,
            if args.rejects.is_some() {
                " (all are in --rejects)"
            } else {
                " (--rejects FILE lists them all)"
            }
        );
    }
    if let Some(p) = out_path {
        out.finish(p)?;
        if !is_stdio(p) {
            eprintln!("{}: {} frames", p.display(), counts.frames);
        }
    }
    rejects.finish(args.rejects.as_deref())?;
    if counts.frames == 0 && counts.errors > 0 {
        bail!(
            "{}: no frame decoded and {} packets refused",
            input.display(),
            counts.errors
        );
    }
    Ok(())
}
