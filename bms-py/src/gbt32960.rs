//! `bms._bms.Gbt32960Decoder`: the streaming GB/T 32960 decoder
//! ([`bms_core::gbt32960::Decoder`], the code `bms ingest` and the C library run), with
//! the frames and refusals of each push handed over as columns.

use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use bms_core::gbt32960::{Decoder, Event, command_name};

/// Bytes in, frames and refused packets out (both editions, told per packet). Not for
/// concurrent use by two threads.
#[pyclass(name = "Gbt32960Decoder", module = "bms._bms")]
pub(crate) struct PyGbt32960Decoder {
    inner: Decoder,
}

/// Frame columns being collected (`cells[cell_offsets[i]..cell_offsets[i + 1]]` are frame
/// `i`'s cell voltages; likewise temperatures).
#[derive(Default)]
struct Columns {
    vins: Vec<String>,
    codes: Vec<i64>,
    ts: Vec<i64>,
    pv: Vec<f64>,
    pc: Vec<f64>,
    soc: Vec<f64>,
    cells: Vec<f64>,
    cell_offsets: Vec<i64>,
    temps: Vec<f64>,
    temp_offsets: Vec<i64>,
    flags: Vec<i64>,
    offset: Vec<u64>,
    edition: Vec<u16>,
    command: Vec<u8>,
}

#[pymethods]
impl PyGbt32960Decoder {
    #[new]
    fn new() -> Self {
        PyGbt32960Decoder {
            inner: Decoder::new(),
        }
    }

    /// Appends bytes of the stream (any piece size).
    fn push(&mut self, data: &Bound<'_, PyBytes>) {
        self.inner.push(data.as_bytes());
    }

    /// Marks the end of the stream: a truncated last packet is then reported.
    fn finish(&mut self) {
        self.inner.finish();
    }

    /// Bytes held waiting for more input.
    fn pending(&self) -> usize {
        self.inner.pending()
    }

    /// Everything decodable so far: `(frames, refused)`. `frames` is a dict of columns
    /// (`vins`, `codes` indexing `vins`, `timestamp_ms`, `pack_voltage`, `pack_current`,
    /// `soc`, `cells` + `cell_offsets`, `temps` + `temp_offsets`, `alarm_flags` with -1 for
    /// none, `offset`, `edition`, `command`); `refused` a list of `(offset, length, kind,
    /// command name or None, VIN or None, reason, message)`.
    fn drain<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyList>)> {
        let mut c = Columns {
            cell_offsets: vec![0],
            temp_offsets: vec![0],
            ..Columns::default()
        };
        let refused = PyList::empty(py);
        while let Some(event) = self.inner.next() {
            match event {
                Event::Packet(_) => {}
                Event::Error(e) => {
                    let message = e.to_string();
                    refused.append((
                        e.offset,
                        e.len,
                        e.kind.name(),
                        e.command.map(command_name),
                        e.vin,
                        e.reason,
                        message,
                    ))?;
                }
                Event::Frame(info, f) => {
                    if c.vins.last().map(String::as_str) != Some(f.vin) {
                        c.vins.push(f.vin.to_string());
                    }
                    c.codes.push(c.vins.len() as i64 - 1);
                    c.ts.push(f.timestamp_ms);
                    c.pv.push(f.pack_voltage);
                    c.pc.push(f.pack_current);
                    c.soc.push(f.soc);
                    c.cells.extend_from_slice(f.cell_voltages);
                    c.cell_offsets.push(c.cells.len() as i64);
                    c.temps.extend_from_slice(f.temperatures);
                    c.temp_offsets.push(c.temps.len() as i64);
                    c.flags.push(f.alarm_flags.map_or(-1, i64::from));
                    c.offset.push(info.offset);
                    c.edition.push(info.edition.year());
                    c.command.push(info.command);
                }
            }
        }
        let d = PyDict::new(py);
        d.set_item("vins", PyList::new(py, c.vins)?)?;
        d.set_item("codes", c.codes.into_pyarray(py))?;
        d.set_item("timestamp_ms", c.ts.into_pyarray(py))?;
        d.set_item("pack_voltage", c.pv.into_pyarray(py))?;
        d.set_item("pack_current", c.pc.into_pyarray(py))?;
        d.set_item("soc", c.soc.into_pyarray(py))?;
        d.set_item("cells", c.cells.into_pyarray(py))?;
        d.set_item("cell_offsets", c.cell_offsets.into_pyarray(py))?;
        d.set_item("temps", c.temps.into_pyarray(py))?;
        d.set_item("temp_offsets", c.temp_offsets.into_pyarray(py))?;
        d.set_item("alarm_flags", c.flags.into_pyarray(py))?;
        d.set_item("offset", c.offset.into_pyarray(py))?;
        d.set_item("edition", c.edition.into_pyarray(py))?;
        d.set_item("command", c.command.into_pyarray(py))?;
        Ok((d, refused))
    }

    /// The counts so far: bytes, packets (and by command name), frames, no_frame,
    /// replies, errors (and by kind), error_bytes.
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.counts();
        let d = PyDict::new(py);
        d.set_item("bytes", c.bytes)?;
        d.set_item("packets", c.packets())?;
        let by = PyDict::new(py);
        for (cmd, n) in c.commands() {
            by.set_item(command_name(cmd), n)?;
        }
        d.set_item("by_command", by)?;
        d.set_item("frames", c.frames)?;
        d.set_item("no_frame", c.no_frame)?;
        d.set_item("replies", c.replies)?;
        d.set_item("errors", c.errors)?;
        let kinds = PyDict::new(py);
        for (kind, n) in c.error_kinds() {
            kinds.set_item(kind.name(), n)?;
        }
        d.set_item("errors_by_kind", kinds)?;
        d.set_item("error_bytes", c.error_bytes)?;
        d.set_item("summary", c.to_string())?;
        Ok(d)
    }
}
