//! Frames: one snapshot of one vehicle's pack (SPEC §2).
//!
//! [`FrameRef`] borrows caller buffers (what the C ABI and Python hand us); [`Frame`] owns
//! them; [`Frames`] is a columnar collection (cells and probes stored flat with offsets,
//! like Arrow list arrays) that readers produce and aggregation consumes.
//!
//! Sign convention of `pack_current`: kept as the source reports it. GB/T 32960 reports
//! discharge as positive current and charge as negative; the simulator follows that.

use crate::error::{BmsError, Result};

/// The GB/T 32960.3 general alarm bit "cell consistency poor" (bit 10).
pub const CONSISTENCY_ALARM_MASK: u32 = 0x400;

/// A borrowed view of one frame. Invalid readings are NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRef<'a> {
    pub vin: &'a str,
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp_ms: i64,
    pub pack_voltage: f64,
    pub pack_current: f64,
    /// BMS-reported pack SOC in percent.
    pub soc: f64,
    pub cell_voltages: &'a [f64],
    pub temperatures: &'a [f64],
    pub alarm_flags: Option<u32>,
}

impl FrameRef<'_> {
    /// Checks the invariants every consumer relies on: a non-empty VIN, at least one cell
    /// and at least one probe.
    pub fn validate(&self) -> Result<()> {
        if self.vin.is_empty() {
            return Err(BmsError::invalid("frame", "empty VIN"));
        }
        if self.cell_voltages.is_empty() {
            return Err(BmsError::invalid(
                "frame",
                format!(
                    "VIN {}: no cell voltages (at least one cell is required)",
                    self.vin
                ),
            ));
        }
        if self.temperatures.is_empty() {
            return Err(BmsError::invalid(
                "frame",
                format!(
                    "VIN {}: no temperatures (at least one probe is required)",
                    self.vin
                ),
            ));
        }
        Ok(())
    }

    pub fn to_owned(&self) -> Frame {
        Frame {
            vin: self.vin.to_owned(),
            timestamp_ms: self.timestamp_ms,
            pack_voltage: self.pack_voltage,
            pack_current: self.pack_current,
            soc: self.soc,
            cell_voltages: self.cell_voltages.to_vec(),
            temperatures: self.temperatures.to_vec(),
            alarm_flags: self.alarm_flags,
        }
    }
}

/// An owned frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub vin: String,
    pub timestamp_ms: i64,
    pub pack_voltage: f64,
    pub pack_current: f64,
    pub soc: f64,
    pub cell_voltages: Vec<f64>,
    pub temperatures: Vec<f64>,
    pub alarm_flags: Option<u32>,
}

impl Frame {
    pub fn as_ref(&self) -> FrameRef<'_> {
        FrameRef {
            vin: &self.vin,
            timestamp_ms: self.timestamp_ms,
            pack_voltage: self.pack_voltage,
            pack_current: self.pack_current,
            soc: self.soc,
            cell_voltages: &self.cell_voltages,
            temperatures: &self.temperatures,
            alarm_flags: self.alarm_flags,
        }
    }
}

/// A columnar collection of frames, each remembering the source line (text files) or row
/// (Parquet) it came from so that later errors can point at it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frames {
    vins: Vec<String>,
    vin_lookup: std::collections::HashMap<String, u32>,
    /// Index into `vins` for each frame.
    vin_idx: Vec<u32>,
    timestamp_ms: Vec<i64>,
    pack_voltage: Vec<f64>,
    pack_current: Vec<f64>,
    soc: Vec<f64>,
    cells: Vec<f64>,
    cell_offsets: Vec<usize>,
    temps: Vec<f64>,
    temp_offsets: Vec<usize>,
    alarm_flags: Vec<Option<u32>>,
    lines: Vec<u64>,
}

impl Frames {
    pub fn new() -> Self {
        Frames {
            cell_offsets: vec![0],
            temp_offsets: vec![0],
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.timestamp_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamp_ms.is_empty()
    }

    /// Appends a frame read from `line` (1-based; pass the row number for non-text input).
    pub fn push(&mut self, frame: FrameRef<'_>, line: u64) {
        if self.cell_offsets.is_empty() {
            self.cell_offsets.push(0);
            self.temp_offsets.push(0);
        }
        let idx = match self.vins.last() {
            Some(last) if last == frame.vin => self.vins.len() - 1,
            _ => match self.vin_lookup.get(frame.vin) {
                Some(&i) => i as usize,
                None => {
                    self.vins.push(frame.vin.to_owned());
                    self.vin_lookup
                        .insert(frame.vin.to_owned(), (self.vins.len() - 1) as u32);
                    self.vins.len() - 1
                }
            },
        };
        self.vin_idx.push(idx as u32);
        self.timestamp_ms.push(frame.timestamp_ms);
        self.pack_voltage.push(frame.pack_voltage);
        self.pack_current.push(frame.pack_current);
        self.soc.push(frame.soc);
        self.cells.extend_from_slice(frame.cell_voltages);
        self.cell_offsets.push(self.cells.len());
        self.temps.extend_from_slice(frame.temperatures);
        self.temp_offsets.push(self.temps.len());
        self.alarm_flags.push(frame.alarm_flags);
        self.lines.push(line);
    }

    /// The frame at `i`. Panics if `i >= len()`, like slice indexing.
    pub fn get(&self, i: usize) -> FrameRef<'_> {
        FrameRef {
            vin: &self.vins[self.vin_idx[i] as usize],
            timestamp_ms: self.timestamp_ms[i],
            pack_voltage: self.pack_voltage[i],
            pack_current: self.pack_current[i],
            soc: self.soc[i],
            cell_voltages: &self.cells[self.cell_offsets[i]..self.cell_offsets[i + 1]],
            temperatures: &self.temps[self.temp_offsets[i]..self.temp_offsets[i + 1]],
            alarm_flags: self.alarm_flags[i],
        }
    }

    /// The source line (or row) of frame `i`.
    pub fn line(&self, i: usize) -> u64 {
        self.lines[i]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = FrameRef<'_>> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Indices of the frames ordered by (VIN, timestamp), ties kept in input order.
    pub fn sorted_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by(|&a, &b| {
            self.vins[self.vin_idx[a] as usize]
                .cmp(&self.vins[self.vin_idx[b] as usize])
                .then(self.timestamp_ms[a].cmp(&self.timestamp_ms[b]))
        });
        order
    }
}

impl<'a> FromIterator<FrameRef<'a>> for Frames {
    fn from_iter<T: IntoIterator<Item = FrameRef<'a>>>(iter: T) -> Self {
        let mut frames = Frames::new();
        for (i, f) in iter.into_iter().enumerate() {
            frames.push(f, i as u64 + 1);
        }
        frames
    }
}
