//! Writes GB/T 32960.3 packets (see the `gbt32960` module docs): the simulator's captures,
//! a gateway's replies, and the tests' second reading of `docs/GBT32960.md` (§9 there
//! summarises the choices below).
//!
//! Written from the facts file, not from the decoder. Every function refuses what the
//! standard cannot carry instead of writing something else: a VIN that is not 17 printable
//! ASCII characters (or ends in a space, which readers strip as padding), a time outside Beijing years 2000–2099, a reading outside its field's
//! range (the error names the field and the value), a data unit over 65,531 bytes. NaN
//! readings are written as the field's "invalid" marker (`FF`, `FF FF`, `FF FF FF FF`).
//!
//! Readings are quantised to the field's unit by rounding to the nearest step (half away
//! from zero): 0.1 V and 0.1 A (with the edition's current offset), 1 % SOC, 0.001 V per
//! cell, 1 °C per probe (offset 40). Times are floored to the second.
//!
//! Choices [`frame_packet`] makes for what a [`FrameRef`] does not hold (facts §7):
//! - Items in the order vehicle, alarm, cell voltages, temperatures; in 2025 then a
//!   signature block with algorithm `01` (SM2) and empty R and S, since that edition ends
//!   every realtime data unit with one and we hold no key.
//! - Vehicle item: vehicle, charging and DC-DC states, speed, odometer and (2016) pedals
//!   are the "invalid" marker; mode `01` electric; gear byte `00` in 2016 (the field has
//!   no marker) and `80` (bit 7, gear invalid) in 2025; insulation 60,000 kΩ in 2016 (no
//!   marker; the top of the range) and the marker in 2025.
//! - One cell subsystem (pack) numbered 1 carrying the frame's pack voltage and current;
//!   in 2016 it is split into entries of at most 200 cells with consecutive first-cell
//!   numbers in the same `08` item, whose count byte counts entries.
//! - One probe group numbered 1.
//! - Alarm flags: `None` writes no alarm item. `Some(flags)` writes the item with maximum
//!   level 0 when no flag is set and 1 otherwise, empty fault lists and, in 2025, one
//!   (bit, level 1) pair per set flag. A flags value equal to a marker (`FFFFFFFE`,
//!   `FFFFFFFF`) is refused: it would read back as no flags.

use chrono::{Datelike, Timelike};

use super::{ENCRYPTION_NONE, Edition, MAX_DATA_LEN, command, response};
use crate::frame::FrameRef;

/// Why a packet could not be written. Nothing is written when an error is returned (the
/// `_into` functions leave their buffer as it was).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// The unique id is not 17 printable ASCII characters, or ends in a space (which
    /// readers strip as padding).
    #[error(
        "VIN {vin:?} ({len} bytes): a VIN or platform id must be 17 printable ASCII characters"
    )]
    Vin { vin: String, len: usize },
    /// The time is not in Beijing years 2000–2099 (the time field holds year − 2000).
    #[error("time {utc_ms} ms: packet times are Beijing time (GMT+8) in the years 2000-2099")]
    Time { utc_ms: i64 },
    /// A reading that quantises outside its field's range (infinities included).
    #[error("{field} {value} is outside the range {min} to {max} of its {edition} field")]
    OutOfRange {
        field: String,
        value: f64,
        min: f64,
        max: f64,
        edition: Edition,
    },
    /// More list entries (cells, probes, codes, entries…) than the field can count.
    #[error("{field}: {count} is more than the {max} the field allows")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    /// The data unit would be longer than a packet's length field allows.
    #[error("a data unit of {len} bytes is longer than the {MAX_DATA_LEN} a packet can carry")]
    TooLong { len: usize },
    /// Any other value the field cannot hold.
    #[error("{field} {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
}

type Result<T> = std::result::Result<T, EncodeError>;

/// Bytes before the data unit.
const HEADER_LEN: usize = 24;

/// The largest WORD count (cells, probes): the markers `FFFE`/`FFFF` and the reserved values
/// above 65531 are not counts.
const MAX_WORD_COUNT: usize = 65_531;

/// Cells per 2016 voltage entry (facts §5.2).
pub const MAX_CELLS_PER_ENTRY_2016: usize = 200;

/// Runs `body` on `out` and undoes whatever it appended if it fails.
fn atomic(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    let start = out.len();
    body(out).inspect_err(|_| out.truncate(start))
}

fn check_id(id: &str) -> Result<&[u8; 17]> {
    let bytes = id.as_bytes();
    match <&[u8; 17]>::try_from(bytes) {
        // A trailing space would read back as padding, giving a shorter id.
        Ok(b) if b.iter().all(|c| (0x20..=0x7E).contains(c)) && b[16] != b' ' => Ok(b),
        _ => Err(EncodeError::Vin {
            vin: id.to_owned(),
            len: bytes.len(),
        }),
    }
}

/// Appends a packet whose data unit `body` writes, then its length and BCC.
fn build(
    out: &mut Vec<u8>,
    edition: Edition,
    cmd: u8,
    resp: u8,
    id: &str,
    encryption: u8,
    body: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let id = check_id(id)?;
    atomic(out, |out| {
        let start = out.len();
        let s = edition.start_byte();
        out.extend_from_slice(&[s, s, cmd, resp]);
        out.extend_from_slice(id);
        out.extend_from_slice(&[encryption, 0, 0]);
        body(out)?;
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_DATA_LEN {
            return Err(EncodeError::TooLong { len });
        }
        out[start + 22..start + 24].copy_from_slice(&(len as u16).to_be_bytes());
        // The BCC covers the command byte through the last data byte.
        let bcc = out[start + 2..].iter().fold(0u8, |a, &b| a ^ b);
        out.push(bcc);
        Ok(())
    })
}

/// A packet: start symbol, command, response flag, 17-byte VIN (or platform id),
/// encryption byte, length, `data`, BCC.
pub fn packet(
    edition: Edition,
    command: u8,
    response: u8,
    vin: &str,
    encryption: u8,
    data: &[u8],
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(super::PACKET_OVERHEAD + data.len());
    packet_into(&mut out, edition, command, response, vin, encryption, data)?;
    Ok(out)
}

/// [`packet`], appended to `out`.
pub fn packet_into(
    out: &mut Vec<u8>,
    edition: Edition,
    command: u8,
    response: u8,
    vin: &str,
    encryption: u8,
    data: &[u8],
) -> Result<()> {
    if data.len() > MAX_DATA_LEN {
        return Err(EncodeError::TooLong { len: data.len() });
    }
    build(out, edition, command, response, vin, encryption, |out| {
        out.extend_from_slice(data);
        Ok(())
    })
}

/// The 6 time bytes of `utc_ms`: Beijing time (GMT+8, no daylight saving) as year − 2000,
/// month, day, hour, minute, second; milliseconds are dropped (floored).
pub fn time_bytes(utc_ms: i64) -> Result<[u8; 6]> {
    let bad = || EncodeError::Time { utc_ms };
    let beijing = utc_ms.checked_add(8 * 3_600_000).ok_or_else(bad)?;
    let t = chrono::DateTime::from_timestamp_millis(beijing)
        .ok_or_else(bad)?
        .naive_utc();
    if !(2000..=2099).contains(&t.year()) {
        return Err(bad());
    }
    Ok([
        (t.year() - 2000) as u8,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    ])
}

/// A numeric field: raw = round(value × `per_unit`) + `offset`, valid in `0..=max`.
#[derive(Clone, Copy)]
struct Scale {
    per_unit: f64,
    offset: i64,
    max: u32,
}

impl Scale {
    const fn new(per_unit: f64, offset: i64, max: u32) -> Scale {
        Scale {
            per_unit,
            offset,
            max,
        }
    }
}

const SOC: Scale = Scale::new(1.0, 0, 100);
const CELL_VOLTS: Scale = Scale::new(1000.0, 0, 60_000);
const PROBE_CELSIUS: Scale = Scale::new(1.0, 40, 250);
const ODOMETER: Scale = Scale::new(10.0, 0, 9_999_999);
const INSULATION: Scale = Scale::new(1.0, 0, 60_000);
const PEDAL: Scale = Scale::new(1.0, 0, 100);
/// 101 means braking without a travel value.
const BRAKE: Scale = Scale::new(1.0, 0, 101);

fn pack_volts(e: Edition) -> Scale {
    match e {
        Edition::V2016 => Scale::new(10.0, 0, 10_000),
        Edition::V2025 => Scale::new(10.0, 0, 60_000),
    }
}

fn pack_amps(e: Edition) -> Scale {
    match e {
        Edition::V2016 => Scale::new(10.0, 10_000, 20_000),
        Edition::V2025 => Scale::new(10.0, 30_000, 60_000),
    }
}

fn speed(e: Edition) -> Scale {
    match e {
        Edition::V2016 => Scale::new(10.0, 0, 2_200),
        Edition::V2025 => Scale::new(10.0, 0, 5_000),
    }
}

/// The raw value of a finite or infinite reading (NaN is the caller's), or the error.
fn quantise(edition: Edition, field: impl FnOnce() -> String, value: f64, s: Scale) -> Result<u32> {
    let raw = (value * s.per_unit).round() + s.offset as f64;
    if (0.0..=f64::from(s.max)).contains(&raw) {
        Ok(raw as u32)
    } else {
        Err(EncodeError::OutOfRange {
            field: field(),
            value,
            min: -(s.offset as f64) / s.per_unit,
            max: (i64::from(s.max) - s.offset) as f64 / s.per_unit,
            edition,
        })
    }
}

fn put_byte(
    out: &mut Vec<u8>,
    edition: Edition,
    field: impl FnOnce() -> String,
    value: f64,
    s: Scale,
) -> Result<()> {
    let raw = if value.is_nan() {
        0xFF
    } else {
        quantise(edition, field, value, s)? as u8
    };
    out.push(raw);
    Ok(())
}

fn put_word(
    out: &mut Vec<u8>,
    edition: Edition,
    field: impl FnOnce() -> String,
    value: f64,
    s: Scale,
) -> Result<()> {
    let raw = if value.is_nan() {
        0xFFFF
    } else {
        quantise(edition, field, value, s)? as u16
    };
    out.extend_from_slice(&raw.to_be_bytes());
    Ok(())
}

fn put_dword(
    out: &mut Vec<u8>,
    edition: Edition,
    field: impl FnOnce() -> String,
    value: f64,
    s: Scale,
) -> Result<()> {
    let raw = if value.is_nan() {
        0xFFFF_FFFF
    } else {
        quantise(edition, field, value, s)?
    };
    out.extend_from_slice(&raw.to_be_bytes());
    Ok(())
}

/// A count BYTE or WORD must stay below the markers and within `max`.
fn count(field: impl FnOnce() -> String, n: usize, max: usize) -> Result<usize> {
    if n > max {
        Err(EncodeError::TooMany {
            field: field(),
            count: n,
            max,
        })
    } else {
        Ok(n)
    }
}

fn name(s: &str) -> impl FnOnce() -> String + '_ {
    move || s.to_owned()
}

/// The vehicle item (`01`). Readings are in physical units, NaN for "invalid"; the state
/// bytes are written as given (`FE`/`FF` are the markers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VehicleItem {
    /// `01` started, `02` off, `03` other.
    pub state: u8,
    /// `01` parked charging, `02` charging while driving, `03` not charging, `04` complete.
    pub charging: u8,
    /// `01` electric, `02` hybrid, `03` fuel.
    pub mode: u8,
    pub speed_kmh: f64,
    pub odometer_km: f64,
    pub voltage: f64,
    pub current: f64,
    pub soc: f64,
    /// `01` working, `02` off.
    pub dcdc: u8,
    /// Gear bits 0–3, braking force bit 4, driving force bit 5 (2025: bit 7 gear invalid).
    pub gear: u8,
    /// kΩ; the 2016 field has no marker, so NaN is refused there.
    pub insulation_kohm: f64,
    /// 2016 only (not written in 2025): accelerator and brake pedal, %.
    pub accelerator_pct: f64,
    pub brake_pct: f64,
}

impl VehicleItem {
    /// What [`frame_packet`] writes for a frame's pack voltage, current and SOC (module
    /// docs).
    pub fn of_pack(edition: Edition, voltage: f64, current: f64, soc: f64) -> VehicleItem {
        let (gear, insulation_kohm) = match edition {
            Edition::V2016 => (0x00, 60_000.0),
            Edition::V2025 => (0x80, f64::NAN),
        };
        VehicleItem {
            state: 0xFF,
            charging: 0xFF,
            mode: 0x01,
            speed_kmh: f64::NAN,
            odometer_km: f64::NAN,
            voltage,
            current,
            soc,
            dcdc: 0xFF,
            gear,
            insulation_kohm,
            accelerator_pct: f64::NAN,
            brake_pct: f64::NAN,
        }
    }
}

/// Appends the vehicle item (type byte included): 21 bytes in 2016, 19 in 2025.
pub fn vehicle_item(out: &mut Vec<u8>, edition: Edition, v: &VehicleItem) -> Result<()> {
    let e = edition;
    atomic(out, |out| {
        out.extend_from_slice(&[0x01, v.state, v.charging, v.mode]);
        put_word(out, e, name("speed"), v.speed_kmh, speed(e))?;
        put_dword(out, e, name("odometer"), v.odometer_km, ODOMETER)?;
        put_word(out, e, name("pack_voltage"), v.voltage, pack_volts(e))?;
        put_word(out, e, name("pack_current"), v.current, pack_amps(e))?;
        put_byte(out, e, name("soc"), v.soc, SOC)?;
        out.extend_from_slice(&[v.dcdc, v.gear]);
        if e == Edition::V2016 && v.insulation_kohm.is_nan() {
            return Err(EncodeError::Invalid {
                field: "insulation".into(),
                value: "NaN".into(),
                reason: "the 2016 insulation field has no invalid marker".into(),
            });
        }
        put_word(out, e, name("insulation"), v.insulation_kohm, INSULATION)?;
        if e == Edition::V2016 {
            put_byte(out, e, name("accelerator"), v.accelerator_pct, PEDAL)?;
            put_byte(out, e, name("brake"), v.brake_pct, BRAKE)?;
        }
        Ok(())
    })
}

/// The alarm item (2016 `07`, 2025 `06`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AlarmItem<'a> {
    /// Maximum alarm level: 2016 0–3, 2025 0–4, or a marker (`FE`, `FF`).
    pub level: u8,
    /// The general alarm flags DWORD, written as given.
    pub flags: u32,
    /// Storage, motor, engine and other fault codes (OEM-defined).
    pub faults: [&'a [u32]; 4],
    /// 2025 only: (flag bit, level) pairs.
    pub flag_levels: &'a [(u8, u8)],
}

/// Appends the alarm item (type byte included).
pub fn alarm_item(out: &mut Vec<u8>, edition: Edition, a: &AlarmItem<'_>) -> Result<()> {
    let max_level = match edition {
        Edition::V2016 => 3,
        Edition::V2025 => 4,
    };
    if a.level > max_level && a.level < 0xFE {
        return Err(EncodeError::Invalid {
            field: "alarm level".into(),
            value: a.level.to_string(),
            reason: format!("{edition} levels are 0-{max_level}"),
        });
    }
    if edition == Edition::V2016 && !a.flag_levels.is_empty() {
        return Err(EncodeError::Invalid {
            field: "alarm flag levels".into(),
            value: format!("{} pairs", a.flag_levels.len()),
            reason: "only the 2025 edition carries them".into(),
        });
    }
    atomic(out, |out| {
        out.push(match edition {
            Edition::V2016 => 0x07,
            Edition::V2025 => 0x06,
        });
        out.push(a.level);
        out.extend_from_slice(&a.flags.to_be_bytes());
        for (list, what) in a.faults.iter().zip(["storage", "motor", "engine", "other"]) {
            let n = count(|| format!("{what} fault codes"), list.len(), 253)?;
            out.push(n as u8);
            for code in *list {
                out.extend_from_slice(&code.to_be_bytes());
            }
        }
        if edition == Edition::V2025 {
            let n = count(name("alarm flag levels"), a.flag_levels.len(), 253)?;
            out.push(n as u8);
            for &(bit, level) in a.flag_levels {
                out.extend_from_slice(&[bit, level]);
            }
        }
        Ok(())
    })
}

/// One battery subsystem (2016) or pack (2025) of the cell-voltage item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellGroup<'a> {
    /// Subsystem or pack number (2016 1–250, 2025 1–50).
    pub number: u8,
    pub voltage: f64,
    pub current: f64,
    /// Cell (2025: minimum-parallel-unit) voltages, V; NaN for invalid.
    pub cells: &'a [f64],
}

/// Appends the cell-voltage item (2016 `08`, 2025 `07`). In 2016 each group is split into
/// entries of at most 200 cells, and the count byte counts entries (facts §7.3).
pub fn cell_voltages_item(
    out: &mut Vec<u8>,
    edition: Edition,
    groups: &[CellGroup<'_>],
) -> Result<()> {
    let e = edition;
    atomic(out, |out| {
        let max_number = match e {
            Edition::V2016 => 250,
            Edition::V2025 => 50,
        };
        distinct(groups.iter().map(|g| g.number), "cell group number")?;
        for g in groups {
            if g.number == 0 || g.number > max_number {
                return Err(EncodeError::Invalid {
                    field: "cell group number".into(),
                    value: g.number.to_string(),
                    reason: format!("{e} numbers subsystems (packs) 1-{max_number}"),
                });
            }
            count(name("cells in a group"), g.cells.len(), MAX_WORD_COUNT)?;
            if g.cells.is_empty() {
                return Err(EncodeError::Invalid {
                    field: "cells in a group".into(),
                    value: "0".into(),
                    reason: "a group holds at least one cell".into(),
                });
            }
        }
        match e {
            Edition::V2016 => {
                out.push(0x08);
                let entries: usize = groups
                    .iter()
                    .map(|g| g.cells.len().div_ceil(MAX_CELLS_PER_ENTRY_2016))
                    .sum();
                let entries = count(name("cell voltage entries"), entries, 250)?;
                if entries == 0 {
                    return Err(EncodeError::Invalid {
                        field: "cell voltage entries".into(),
                        value: "0".into(),
                        reason: "the 2016 count is 1-250".into(),
                    });
                }
                out.push(entries as u8);
                let mut base = 0;
                for g in groups {
                    for (k, chunk) in g.cells.chunks(MAX_CELLS_PER_ENTRY_2016).enumerate() {
                        out.push(g.number);
                        put_word(out, e, name("subsystem voltage"), g.voltage, pack_volts(e))?;
                        put_word(out, e, name("subsystem current"), g.current, pack_amps(e))?;
                        out.extend_from_slice(&(g.cells.len() as u16).to_be_bytes());
                        let first = 1 + k * MAX_CELLS_PER_ENTRY_2016;
                        out.extend_from_slice(&(first as u16).to_be_bytes());
                        out.push(chunk.len() as u8);
                        put_cells(out, e, chunk, base + first - 1)?;
                    }
                    base += g.cells.len();
                }
            }
            Edition::V2025 => {
                out.push(0x07);
                out.push(count(name("packs"), groups.len(), 50)? as u8);
                let mut base = 0;
                for g in groups {
                    out.push(g.number);
                    put_word(out, e, name("pack voltage"), g.voltage, pack_volts(e))?;
                    put_word(out, e, name("pack current"), g.current, pack_amps(e))?;
                    out.extend_from_slice(&(g.cells.len() as u16).to_be_bytes());
                    put_cells(out, e, g.cells, base)?;
                    base += g.cells.len();
                }
            }
        }
        Ok(())
    })
}

/// Each subsystem (pack, probe group) number may appear once in an item (the decoder
/// refuses repeats: which one holds would be a guess).
fn distinct(numbers: impl Iterator<Item = u8>, field: &str) -> Result<()> {
    let mut seen = [false; 256];
    for n in numbers {
        if std::mem::replace(&mut seen[usize::from(n)], true) {
            return Err(EncodeError::Invalid {
                field: field.into(),
                value: n.to_string(),
                reason: "appears twice in one item".into(),
            });
        }
    }
    Ok(())
}

/// Cell voltages; errors name a cell by its index among all the item's cells, in the
/// order written.
fn put_cells(out: &mut Vec<u8>, e: Edition, cells: &[f64], first_index: usize) -> Result<()> {
    for (i, &v) in cells.iter().enumerate() {
        put_word(
            out,
            e,
            || format!("cell_voltages[{}]", first_index + i),
            v,
            CELL_VOLTS,
        )?;
    }
    Ok(())
}

/// One probe group of the temperature item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeGroup<'a> {
    /// Subsystem or pack number.
    pub number: u8,
    /// °C; NaN for invalid.
    pub temperatures: &'a [f64],
}

/// Appends the temperature item (2016 `09`, 2025 `08`).
pub fn temperatures_item(
    out: &mut Vec<u8>,
    edition: Edition,
    groups: &[ProbeGroup<'_>],
) -> Result<()> {
    let e = edition;
    atomic(out, |out| {
        let (code, min_groups, max_groups) = match e {
            Edition::V2016 => (0x09, 1, 250),
            Edition::V2025 => (0x08, 0, 50),
        };
        if groups.len() < min_groups {
            return Err(EncodeError::Invalid {
                field: "probe groups".into(),
                value: "0".into(),
                reason: "the 2016 count is 1-250".into(),
            });
        }
        distinct(groups.iter().map(|g| g.number), "probe group number")?;
        out.push(code);
        out.push(count(name("probe groups"), groups.len(), max_groups)? as u8);
        let mut index = 0;
        for g in groups {
            out.push(g.number);
            let n = count(
                name("probes in a group"),
                g.temperatures.len(),
                MAX_WORD_COUNT,
            )?;
            out.extend_from_slice(&(n as u16).to_be_bytes());
            for &t in g.temperatures {
                put_byte(
                    out,
                    e,
                    || format!("temperatures[{index}]"),
                    t,
                    PROBE_CELSIUS,
                )?;
                index += 1;
            }
        }
        Ok(())
    })
}

/// Appends the 2025 signature block: `FF`, algorithm (`01` SM2, `02` RSA, `03` ECC), R and
/// S each with a WORD length. It must end the data unit.
pub fn signature_block(out: &mut Vec<u8>, algorithm: u8, r: &[u8], s: &[u8]) -> Result<()> {
    atomic(out, |out| {
        out.extend_from_slice(&[0xFF, algorithm]);
        for (part, what) in [(r, "signature R"), (s, "signature S")] {
            let n = count(name(what), part.len(), MAX_WORD_COUNT)?;
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        Ok(())
    })
}

/// A realtime (`02`) or reissue (`03`) report of `frame` (module docs list what it
/// writes for fields a frame does not hold).
pub fn frame_packet(edition: Edition, command: u8, frame: &FrameRef<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(
        96 + 2 * frame.cell_voltages.len()
            + frame.temperatures.len()
            + 10 * frame.cell_voltages.len() / MAX_CELLS_PER_ENTRY_2016,
    );
    frame_packet_into(&mut out, edition, command, frame)?;
    Ok(out)
}

/// [`frame_packet`], appended to `out`.
pub fn frame_packet_into(
    out: &mut Vec<u8>,
    edition: Edition,
    cmd: u8,
    frame: &FrameRef<'_>,
) -> Result<()> {
    if cmd != command::REALTIME && cmd != command::REISSUE {
        return Err(EncodeError::Invalid {
            field: "command".into(),
            value: format!("{cmd:02X}"),
            reason: "frames travel in realtime (02) or reissue (03) reports".into(),
        });
    }
    if frame.cell_voltages.is_empty() || frame.temperatures.is_empty() {
        return Err(EncodeError::Invalid {
            field: "frame".into(),
            value: format!(
                "{} cells, {} probes",
                frame.cell_voltages.len(),
                frame.temperatures.len()
            ),
            reason: "a frame needs at least one cell and one probe".into(),
        });
    }
    let flags = frame.alarm_flags;
    if let Some(f @ 0xFFFF_FFFE..) = flags {
        return Err(EncodeError::Invalid {
            field: "alarm_flags".into(),
            value: format!("{f:#010X}"),
            reason: "the value is the DWORD's marker and would read back as no flags".into(),
        });
    }
    let time = time_bytes(frame.timestamp_ms)?;
    build(
        out,
        edition,
        cmd,
        response::COMMAND,
        frame.vin,
        ENCRYPTION_NONE,
        |out| {
            out.extend_from_slice(&time);
            let v =
                VehicleItem::of_pack(edition, frame.pack_voltage, frame.pack_current, frame.soc);
            vehicle_item(out, edition, &v)?;
            if let Some(flags) = flags {
                let mut pairs = [(0u8, 0u8); 32];
                let mut n = 0;
                for bit in 0..32u8 {
                    if flags & (1 << bit) != 0 {
                        pairs[n] = (bit, 1);
                        n += 1;
                    }
                }
                let alarm = AlarmItem {
                    level: u8::from(flags != 0),
                    flags,
                    faults: [&[]; 4],
                    flag_levels: if edition == Edition::V2025 {
                        &pairs[..n]
                    } else {
                        &[]
                    },
                };
                alarm_item(out, edition, &alarm)?;
            }
            let cells = [CellGroup {
                number: 1,
                voltage: frame.pack_voltage,
                current: frame.pack_current,
                cells: frame.cell_voltages,
            }];
            cell_voltages_item(out, edition, &cells)?;
            let probes = [ProbeGroup {
                number: 1,
                temperatures: frame.temperatures,
            }];
            temperatures_item(out, edition, &probes)?;
            if edition == Edition::V2025 {
                signature_block(out, 0x01, &[], &[])?;
            }
            Ok(())
        },
    )
}

fn check_serial(serial: u16) -> Result<()> {
    if (1..=65531).contains(&serial) {
        Ok(())
    } else {
        Err(EncodeError::Invalid {
            field: "login serial".into(),
            value: serial.to_string(),
            reason: "login serials are 1-65531".into(),
        })
    }
}

/// A fixed-width ASCII STRING field, padded with NUL.
fn put_string(out: &mut Vec<u8>, field: &str, s: &str, width: usize) -> Result<()> {
    if !s.is_ascii() || s.len() > width {
        return Err(EncodeError::Invalid {
            field: field.into(),
            value: format!("{s:?}"),
            reason: format!("the field holds at most {width} ASCII characters"),
        });
    }
    out.extend_from_slice(s.as_bytes());
    out.resize(out.len() + width - s.len(), 0);
    Ok(())
}

/// A vehicle login (`01`). 2016: `codes` are the rechargeable-storage subsystem codes, all
/// of one length (0–50 bytes), at most 250. 2025: `codes` are one BMS's pack codes of 24
/// bytes each, at most 50 (none: a BMS count of 0). The ICCID is padded to 20 bytes.
pub fn vehicle_login(
    edition: Edition,
    vin: &str,
    utc_ms: i64,
    serial: u16,
    iccid: &str,
    codes: &[&str],
) -> Result<Vec<u8>> {
    let time = time_bytes(utc_ms)?;
    check_serial(serial)?;
    let mut out = Vec::new();
    build(
        &mut out,
        edition,
        command::VEHICLE_LOGIN,
        response::COMMAND,
        vin,
        ENCRYPTION_NONE,
        |out| {
            out.extend_from_slice(&time);
            out.extend_from_slice(&serial.to_be_bytes());
            put_string(out, "ICCID", iccid, 20)?;
            match edition {
                Edition::V2016 => {
                    let m = codes.first().map_or(0, |c| c.len());
                    let n = count(name("subsystem codes"), codes.len(), 250)?;
                    out.push(n as u8);
                    out.push(count(name("subsystem code length"), m, 50)? as u8);
                    for c in codes {
                        if c.len() != m {
                            return Err(EncodeError::Invalid {
                                field: "subsystem code".into(),
                                value: format!("{c:?}"),
                                reason: format!("all codes must have the first's length {m}"),
                            });
                        }
                        put_string(out, "subsystem code", c, m)?;
                    }
                }
                Edition::V2025 => {
                    let n = count(name("pack codes"), codes.len(), 50)?;
                    if n == 0 {
                        out.push(0);
                    } else {
                        out.extend_from_slice(&[1, n as u8]);
                    }
                    for c in codes {
                        if c.len() != 24 {
                            return Err(EncodeError::Invalid {
                                field: "pack code".into(),
                                value: format!("{c:?}"),
                                reason: "2025 pack codes are 24 characters".into(),
                            });
                        }
                        put_string(out, "pack code", c, 24)?;
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(out)
}

fn time_and_serial(
    edition: Edition,
    cmd: u8,
    id: &str,
    utc_ms: i64,
    serial: u16,
) -> Result<Vec<u8>> {
    let time = time_bytes(utc_ms)?;
    check_serial(serial)?;
    let mut out = Vec::with_capacity(super::PACKET_OVERHEAD + 8);
    build(
        &mut out,
        edition,
        cmd,
        response::COMMAND,
        id,
        ENCRYPTION_NONE,
        |out| {
            out.extend_from_slice(&time);
            out.extend_from_slice(&serial.to_be_bytes());
            Ok(())
        },
    )?;
    Ok(out)
}

/// A vehicle logout (`04`): time and the serial of the login it closes.
pub fn vehicle_logout(edition: Edition, vin: &str, utc_ms: i64, serial: u16) -> Result<Vec<u8>> {
    time_and_serial(edition, command::VEHICLE_LOGOUT, vin, utc_ms, serial)
}

/// A platform login (`05`): time, serial, username (≤ 12), password (≤ 20) and the
/// encryption rule byte. `platform_id` is the platform's 17-character code.
pub fn platform_login(
    edition: Edition,
    platform_id: &str,
    utc_ms: i64,
    serial: u16,
    username: &str,
    password: &str,
    encryption_rule: u8,
) -> Result<Vec<u8>> {
    let time = time_bytes(utc_ms)?;
    check_serial(serial)?;
    let mut out = Vec::with_capacity(super::PACKET_OVERHEAD + 41);
    build(
        &mut out,
        edition,
        command::PLATFORM_LOGIN,
        response::COMMAND,
        platform_id,
        ENCRYPTION_NONE,
        |out| {
            out.extend_from_slice(&time);
            out.extend_from_slice(&serial.to_be_bytes());
            put_string(out, "username", username, 12)?;
            put_string(out, "password", password, 20)?;
            out.push(encryption_rule);
            Ok(())
        },
    )?;
    Ok(out)
}

/// A platform logout (`06`).
pub fn platform_logout(
    edition: Edition,
    platform_id: &str,
    utc_ms: i64,
    serial: u16,
) -> Result<Vec<u8>> {
    time_and_serial(
        edition,
        command::PLATFORM_LOGOUT,
        platform_id,
        utc_ms,
        serial,
    )
}

/// A heartbeat (`07`): no data.
pub fn heartbeat(edition: Edition, vin: &str) -> Result<Vec<u8>> {
    packet(
        edition,
        command::HEARTBEAT,
        response::COMMAND,
        vin,
        ENCRYPTION_NONE,
        &[],
    )
}

/// A terminal time-sync request (`08`): no data.
pub fn time_sync(edition: Edition, vin: &str) -> Result<Vec<u8>> {
    packet(
        edition,
        command::TIME_SYNC,
        response::COMMAND,
        vin,
        ENCRYPTION_NONE,
        &[],
    )
}

/// A platform's reply to a `command` packet from `vin`: the command and VIN echoed with
/// the result `flag` (`01` success, `02` error, `03` VIN duplicate; 2025 also `04`–`07`).
/// Its data unit is the time alone when `utc_ms` is given (the request's time for the
/// commands that carry one, the platform's time for a time sync), empty otherwise: the
/// 2016 main text's reading (facts §7.8), which the 2025 edition does not contradict.
pub fn response(
    edition: Edition,
    command: u8,
    vin: &str,
    flag: u8,
    utc_ms: Option<i64>,
) -> Result<Vec<u8>> {
    let max_flag = match edition {
        Edition::V2016 => 0x03,
        Edition::V2025 => 0x07,
    };
    if !(0x01..=max_flag).contains(&flag) {
        return Err(EncodeError::Invalid {
            field: "response flag".into(),
            value: format!("{flag:02X}"),
            reason: format!("{edition} replies carry 01-{max_flag:02X}"),
        });
    }
    let time = utc_ms.map(time_bytes).transpose()?;
    packet(
        edition,
        command,
        flag,
        vin,
        ENCRYPTION_NONE,
        time.as_ref().map_or(&[][..], |t| &t[..]),
    )
}

/// [`response()`] to a packet the decoder accepted, keeping its time.
pub fn reply_to(request: &super::PacketInfo, flag: u8) -> Result<Vec<u8>> {
    response(
        request.edition,
        request.command,
        request.id(),
        flag,
        request.time_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIN: &str = "LSPECEXAMPLE00001";

    #[test]
    fn bcc_and_length_of_an_empty_packet() {
        let p = heartbeat(Edition::V2016, VIN).unwrap();
        assert_eq!(p.len(), 25);
        assert_eq!(&p[..4], b"##\x07\xFE");
        assert_eq!(p[24], 0xC8);
    }

    #[test]
    fn time_is_beijing_and_floored() {
        assert_eq!(
            time_bytes(1_741_562_400_999).unwrap(),
            [0x19, 0x03, 0x0A, 0x07, 0x14, 0x00]
        );
        // 2000-01-01 00:00:00 Beijing is 1999-12-31T16:00:00Z.
        assert_eq!(time_bytes(946_656_000_000).unwrap(), [0, 1, 1, 0, 0, 0]);
        assert!(time_bytes(946_656_000_000 - 1).is_err());
        assert!(time_bytes(i64::MAX).is_err());
        assert!(time_bytes(i64::MIN).is_err());
    }

    #[test]
    fn quantise_rounds_and_names_the_range() {
        let e = Edition::V2016;
        assert_eq!(quantise(e, name("x"), -12.3, pack_amps(e)), Ok(9877));
        assert_eq!(quantise(e, name("x"), 3.712, CELL_VOLTS), Ok(3712));
        assert_eq!(quantise(e, name("x"), -40.4, PROBE_CELSIUS), Ok(0));
        let err = quantise(e, name("pack_current"), -1000.1, pack_amps(e)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pack_current -1000.1 is outside the range -1000 to 1000 of its GB/T 32960.3-2016 field"
        );
        assert!(quantise(e, name("x"), f64::INFINITY, SOC).is_err());
    }

    #[test]
    fn a_failed_item_leaves_the_buffer_as_it_was() {
        let mut out = vec![1, 2, 3];
        let cells = [3.7, 61.0];
        let g = [CellGroup {
            number: 1,
            voltage: 7.4,
            current: 0.0,
            cells: &cells,
        }];
        let err = cell_voltages_item(&mut out, Edition::V2016, &g).unwrap_err();
        assert!(err.to_string().starts_with("cell_voltages[1] 61"), "{err}");
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn repeated_group_numbers_are_refused_and_cells_are_named_across_groups() {
        let cells = [3.7, 3.7];
        let g = |number| CellGroup {
            number,
            voltage: 7.4,
            current: 0.0,
            cells: &cells,
        };
        for e in [Edition::V2016, Edition::V2025] {
            let err = cell_voltages_item(&mut Vec::new(), e, &[g(1), g(1)]).unwrap_err();
            assert!(err.to_string().contains("appears twice"), "{err}");
            let p = ProbeGroup {
                number: 3,
                temperatures: &[20.0],
            };
            assert!(temperatures_item(&mut Vec::new(), e, &[p, p]).is_err());
            let bad = [3.7, 99.0];
            let groups = [
                g(2),
                CellGroup {
                    cells: &bad,
                    ..g(1)
                },
            ];
            let err = cell_voltages_item(&mut Vec::new(), e, &groups).unwrap_err();
            assert!(err.to_string().starts_with("cell_voltages[3] 99"), "{err}");
        }
    }
}
