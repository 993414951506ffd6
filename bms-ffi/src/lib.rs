//! `libbms`: the C ABI of the battery consistency-alarm pipeline (`bms.h`).
//!
//! Conventions (STYLE.md "C ABI"): functions are `bms_<type>_<verb>`; objects are opaque
//! handles made by `bms_<type>_new`/`_load` and released by `bms_<type>_free`, which
//! accepts NULL; the handle comes first, inputs before outputs, every buffer is followed by
//! its length; every fallible function returns a [`BmsStatus`] and writes its
//! out-parameters only when it returns `BMS_STATUS_OK`; the text of the last failure on
//! the calling thread is [`bms_last_error_message`].
//!
//! Every exported body runs inside `boundary`, which checks for panics: a panic becomes
//! `BMS_STATUS_PANIC`, never an unwind into C.
//!
//! Thread safety: a `bms_model` is immutable after loading and may be used by any number
//! of threads at once (predictions and monitors on several threads may share it). A
//! `bms_monitor` is a mutable state machine: it may move between threads but must not be
//! used by two threads at the same time (the caller serialises access).
//!
//! The monitor itself is [`bms_core::monitor::Monitor`]; this crate only translates
//! pointers, lengths and statuses. Its Rust library is `bms_ffi` (so it does not collide
//! with the `bms` command's); the C artefacts `libbms.so` and `libbms.a` are cargo's
//! `libbms_ffi.so` and `libbms_ffi.a` under the name C links them by (`scripts/test-c.sh`
//! symlinks them; the shared library has no SONAME, so a program linked with `-lbms`
//! needs `libbms.so`). The Rust tests in `tests/` link the Rust library and
//! call the exported functions exactly as C does, as this example does:
//!
//! ```
//! use std::ptr;
//! use bms_ffi::*;
//!
//! let path = c"../models/consistency-ref14x6.onnx";
//! let (mut model, mut monitor) = (ptr::null_mut(), ptr::null_mut());
//! let mut p = -1f32;
//! unsafe {
//!     assert_eq!(bms_model_load(path.as_ptr(), &mut model), BmsStatus::Ok);
//!     assert_eq!(bms_monitor_new(model, ptr::null(), &mut monitor), BmsStatus::Ok);
//!     // No day has closed yet: there is no window to score, and `p` is not written.
//!     assert_eq!(bms_monitor_predict(monitor, &mut p), BmsStatus::NotReady);
//!     assert_eq!(p, -1.0);
//!     bms_monitor_free(monitor);
//!     bms_model_free(model);
//! }
//! ```

// The C signatures (frame fields one by one) are the ABI.
#![allow(clippy::too_many_arguments)]

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bms_core::daily::DailyColumn;
use bms_core::features::{DEFAULT_ALARM_SPREAD_V, FeatureConfig, frame_features};
use bms_core::gbt32960::{DecodeCounts, Decoder, Event};
use bms_core::monitor::{ClosedDay, Monitor, MonitorConfig};
use bms_core::{BmsError, Chemistry, FrameRef, Model, OcvCurve, UtcOffset};

/// Result of every fallible call. The numbers are part of the ABI: they never change and
/// are never reused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmsStatus {
    /// Success; out-parameters were written.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullPointer = 1,
    /// An argument value is not acceptable (e.g. zero cells, an unknown chemistry, a
    /// path that is not UTF-8, a timestamp outside the calendar).
    InvalidArgument = 2,
    /// A buffer length does not fit the other arguments (e.g. `x_len != n_rows × width`,
    /// an output buffer too small).
    LengthMismatch = 3,
    /// A file could not be read.
    Io = 4,
    /// The bytes are not a usable model, or the model failed to run.
    Model = 5,
    /// A frame (or `bms_monitor_advance_to`) is older than the monitor's latest frame;
    /// the monitor is unchanged.
    OutOfOrder = 6,
    /// A frame carries the same timestamp as the monitor's latest frame; the monitor is
    /// unchanged.
    DuplicateTimestamp = 7,
    /// The monitor has closed fewer days than the model's context: no window yet (or no
    /// day is open).
    NotReady = 8,
    /// An index is beyond the available items.
    OutOfRange = 9,
    /// An internal error was caught at the boundary (a bug); the handle involved should
    /// be freed and not used further.
    Panic = 10,
    /// `bms_gbt32960_decoder_next_frame` refused a packet (or a run of bytes): the message
    /// says where (stream byte offset), which packet and why. Decoding goes on with the
    /// next call.
    BadPacket = 11,
}

/// Chemistry of `bms_monitor_config.chemistry` and `bms_frame_compute_features`: selects
/// the shipped OCV curve.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmsChemistry {
    Nmc = 0,
    Lfp = 1,
}

/// `alarm_flags` value meaning "this frame carries no alarm flags": the consistency alarm
/// then follows the spread rule (`cell_v_spread > alarm_spread_v`).
pub const BMS_NO_ALARM_FLAGS: i64 = -1;

/// The GB/T 32960.3 "cell consistency poor" alarm bit (bit 10).
pub const BMS_CONSISTENCY_ALARM_MASK: u32 = 0x400;
const _: () = assert!(BMS_CONSISTENCY_ALARM_MASK == bms_core::frame::CONSISTENCY_ALARM_MASK);

struct FfiError {
    status: BmsStatus,
    /// Borrowed for the fixed messages of expected statuses (`NOT_READY` while draining a
    /// decoder), so that reporting them allocates nothing.
    message: Cow<'static, str>,
}

type FfiResult<T = ()> = Result<T, FfiError>;

fn err(status: BmsStatus, message: impl Into<Cow<'static, str>>) -> FfiError {
    FfiError {
        status,
        message: message.into(),
    }
}

impl From<BmsError> for FfiError {
    fn from(e: BmsError) -> Self {
        let status = match &e {
            BmsError::Io { .. } => BmsStatus::Io,
            BmsError::Model { .. } => BmsStatus::Model,
            BmsError::Shape { .. } => BmsStatus::LengthMismatch,
            BmsError::OutOfOrder { .. } | BmsError::TimestampTooOld { .. } => BmsStatus::OutOfOrder,
            BmsError::DuplicateFrame { .. } | BmsError::DuplicateTimestamp { .. } => {
                BmsStatus::DuplicateTimestamp
            }
            BmsError::NotReady { .. } => BmsStatus::NotReady,
            BmsError::Parse { .. }
            | BmsError::Header { .. }
            | BmsError::DuplicateDay { .. }
            | BmsError::Invalid { .. }
            | BmsError::Parquet { .. } => BmsStatus::InvalidArgument,
        };
        err(status, e.to_string())
    }
}

thread_local! {
    /// The last failure's message, NUL-terminated. The buffer is reused (cleared, not
    /// replaced), so a failure whose message fits what it held before allocates nothing.
    static LAST_ERROR: RefCell<Vec<u8>> = RefCell::new(vec![0]);
}

/// Sets the last error to the concatenation of `parts` (a NUL inside is written `\0`).
fn set_last_error(parts: &[&str]) {
    let _ = LAST_ERROR.try_with(|e| {
        let mut buf = e.borrow_mut();
        buf.clear();
        for part in parts {
            for &b in part.as_bytes() {
                if b == 0 {
                    buf.extend_from_slice(b"\\0");
                } else {
                    buf.push(b);
                }
            }
        }
        buf.push(0);
    });
}

/// Runs an exported body: converts its error into a status (keeping the message for
/// [`bms_last_error_message`]) and a panic into `BMS_STATUS_PANIC`.
fn boundary(name: &str, body: impl FnOnce() -> FfiResult) -> BmsStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => BmsStatus::Ok,
        Ok(Err(e)) => {
            set_last_error(&[name, ": ", &e.message]);
            e.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            // Dropping the payload could itself panic; leak it instead.
            std::mem::forget(payload);
            set_last_error(&[name, ": internal error: ", &what]);
            BmsStatus::Panic
        }
    }
}

/// Like [`boundary`] for functions without a status (the `_free` functions): a panic is
/// swallowed.
fn boundary_void(body: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
        std::mem::forget(payload);
    }
}

/// Drops a handle made by `Box::into_raw`; NULL is a no-op, and a panic in a destructor
/// stays on this side of the boundary.
///
/// # Safety
/// `handle` is NULL or came from `Box::into_raw` and has not been freed.
unsafe fn free_handle<T>(handle: *mut T) {
    if handle.is_null() {
        return;
    }
    boundary_void(|| {
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(handle) });
    });
}

fn non_null<'a, T>(p: *const T, what: &str) -> FfiResult<&'a T> {
    // SAFETY: the caller passes NULL or a valid pointer (the documented contract).
    unsafe { p.as_ref() }.ok_or_else(|| err(BmsStatus::NullPointer, format!("{what} is NULL")))
}

fn non_null_mut<'a, T>(p: *mut T, what: &str) -> FfiResult<&'a mut T> {
    // SAFETY: as in `non_null`.
    unsafe { p.as_mut() }.ok_or_else(|| err(BmsStatus::NullPointer, format!("{what} is NULL")))
}

fn out_ptr<T>(p: *mut T, what: &str) -> FfiResult<*mut T> {
    if p.is_null() {
        Err(err(BmsStatus::NullPointer, format!("{what} is NULL")))
    } else {
        Ok(p)
    }
}

/// A slice from a (pointer, length) pair; NULL is accepted only with length 0.
fn slice<'a, T>(p: *const T, len: usize, what: &str) -> FfiResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(err(
            BmsStatus::NullPointer,
            format!("{what} is NULL with length {len}"),
        ));
    }
    // SAFETY: the caller guarantees `len` readable elements at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

fn slice_mut<'a, T>(p: *mut T, len: usize, what: &str) -> FfiResult<&'a mut [T]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(err(
            BmsStatus::NullPointer,
            format!("{what} is NULL with length {len}"),
        ));
    }
    // SAFETY: the caller guarantees `len` writable elements at `p`.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

fn write<T>(p: *mut T, value: T) {
    // SAFETY: `p` was checked non-NULL and the caller guarantees it is writable.
    unsafe { p.write(value) }
}

fn parse_chemistry(code: u32) -> FfiResult<Chemistry> {
    match code {
        0 => Ok(Chemistry::Nmc),
        1 => Ok(Chemistry::Lfp),
        _ => Err(err(
            BmsStatus::InvalidArgument,
            format!("chemistry {code} (expected 0 = NMC or 1 = LFP)"),
        )),
    }
}

fn parse_alarm_flags(flags: i64) -> FfiResult<Option<u32>> {
    match flags {
        BMS_NO_ALARM_FLAGS => Ok(None),
        f => u32::try_from(f).map(Some).map_err(|_| {
            err(
                BmsStatus::InvalidArgument,
                format!("alarm_flags {f} (expected 0 to 4294967295, or -1 for none)"),
            )
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Library
// ---------------------------------------------------------------------------------------

/// The library version, e.g. `"0.1.0"`: a static NUL-terminated string, never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn bms_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on this thread (empty if none failed yet). The
/// pointer stays valid until the next failing call on the same thread; copy the text to
/// keep it. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn bms_last_error_message() -> *const c_char {
    static EMPTY: &CStr = c"";
    catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ptr().cast())).unwrap_or(EMPTY.as_ptr())
}

// ---------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------

/// A loaded model (opaque). Immutable; shareable by threads.
pub struct BmsModel {
    model: Arc<Model>,
    id: CString,
}

// A model is shared by threads through `const bms_model *`; a monitor may be handed from
// one thread to another (but is never used by two at once).
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    const fn movable<T: Send>() {}
    shareable::<Model>();
    shareable::<BmsModel>();
    movable::<BmsMonitor>();
};

fn new_model(model: Model) -> Box<BmsModel> {
    let id = CString::new(model.contract().model_id.replace('\0', "")).unwrap_or_default();
    Box::new(BmsModel {
        model: Arc::new(model),
        id,
    })
}

/// Loads an ONNX model from a file (`path`: NUL-terminated, UTF-8). On success `*out`
/// receives a model to release with `bms_model_free`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_model_load(path: *const c_char, out: *mut *mut BmsModel) -> BmsStatus {
    boundary("bms_model_load", || {
        if path.is_null() {
            return Err(err(BmsStatus::NullPointer, "path is NULL"));
        }
        let out = out_ptr(out, "out")?;
        // SAFETY: non-NULL and NUL-terminated by contract.
        let path = unsafe { CStr::from_ptr(path) }
            .to_str()
            .map_err(|_| err(BmsStatus::InvalidArgument, "path is not valid UTF-8"))?;
        let model = Model::load(path)?;
        write(out, Box::into_raw(new_model(model)));
        Ok(())
    })
}

/// Loads an ONNX model from the `len` bytes at `bytes` (firmware without a file system).
/// The bytes are not kept. On success `*out` receives a model to release with
/// `bms_model_free`.
///
/// # Safety
/// `bytes` points to `len` readable bytes (or is NULL); `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_model_load_bytes(
    bytes: *const u8,
    len: usize,
    out: *mut *mut BmsModel,
) -> BmsStatus {
    boundary("bms_model_load_bytes", || {
        let bytes = slice(bytes, len, "bytes")?;
        let out = out_ptr(out, "out")?;
        if bytes.is_empty() {
            return Err(err(BmsStatus::Model, "model: 0 bytes is not an ONNX model"));
        }
        let model = Model::from_bytes(bytes)?;
        write(out, Box::into_raw(new_model(model)));
        Ok(())
    })
}

/// Releases a model. NULL is a no-op. Monitors made from the model keep their own
/// reference, so they stay usable after this call.
///
/// # Safety
/// `model` is NULL or a model from `bms_model_load*` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_model_free(model: *mut BmsModel) {
    // SAFETY: made by Box::into_raw in bms_model_load*, freed once by contract.
    unsafe { free_handle(model) }
}

/// Days of history per window (C) of the model's contract.
///
/// # Safety
/// `model` is NULL or a live model; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_model_context(model: *const BmsModel, out: *mut usize) -> BmsStatus {
    boundary("bms_model_context", || {
        let m = non_null(model, "model")?;
        write(out_ptr(out, "out")?, m.model.contract().spec.context);
        Ok(())
    })
}

/// Days ahead the model's label looks (H).
///
/// # Safety
/// As `bms_model_context`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_model_horizon(model: *const BmsModel, out: *mut usize) -> BmsStatus {
    boundary("bms_model_horizon", || {
        let m = non_null(model, "model")?;
        write(out_ptr(out, "out")?, m.model.contract().spec.horizon);
        Ok(())
    })
}

/// Values per input row (context × features per day).
///
/// # Safety
/// As `bms_model_context`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_model_width(model: *const BmsModel, out: *mut usize) -> BmsStatus {
    boundary("bms_model_width", || {
        let m = non_null(model, "model")?;
        write(out_ptr(out, "out")?, m.model.input_width());
        Ok(())
    })
}

/// Alarm threshold: a window alarms when its probability is ≥ this.
///
/// # Safety
/// As `bms_model_context`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_model_threshold(model: *const BmsModel, out: *mut f32) -> BmsStatus {
    boundary("bms_model_threshold", || {
        let m = non_null(model, "model")?;
        write(out_ptr(out, "out")?, m.model.contract().threshold);
        Ok(())
    })
}

/// The model's id (from its `bms.model_id` metadata, else `onnx-` and a hash). `*out`
/// points to a NUL-terminated string owned by the model, valid until `bms_model_free`.
///
/// # Safety
/// As `bms_model_context`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_model_id(
    model: *const BmsModel,
    out: *mut *const c_char,
) -> BmsStatus {
    boundary("bms_model_id", || {
        let m = non_null(model, "model")?;
        write(out_ptr(out, "out")?, m.id.as_ptr());
        Ok(())
    })
}

/// Scores `n_rows` windows: `x` holds `n_rows × width` floats row-major (`x_len` of them,
/// NaN allowed), `probs` receives one probability per row (`probs_len ≥ n_rows`). Nothing
/// is written on failure.
///
/// # Safety
/// `model` is NULL or a live model; `x` points to `x_len` floats, `probs` to `probs_len`
/// writable floats (either may be NULL with length 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_model_predict(
    model: *const BmsModel,
    x: *const f32,
    x_len: usize,
    n_rows: usize,
    probs: *mut f32,
    probs_len: usize,
) -> BmsStatus {
    boundary("bms_model_predict", || {
        let m = non_null(model, "model")?;
        let width = m.model.input_width();
        let x = slice(x, x_len, "x")?;
        let probs = slice_mut(probs, probs_len, "probs")?;
        let expected = n_rows.checked_mul(width).ok_or_else(|| {
            err(
                BmsStatus::LengthMismatch,
                format!("n_rows {n_rows} × width {width} overflows"),
            )
        })?;
        if x.len() != expected {
            return Err(err(
                BmsStatus::LengthMismatch,
                format!(
                    "x_len {} but n_rows {n_rows} × width {width} = {expected}",
                    x.len()
                ),
            ));
        }
        if probs.len() < n_rows {
            return Err(err(
                BmsStatus::LengthMismatch,
                format!("probs_len {} is less than n_rows {n_rows}", probs.len()),
            ));
        }
        if n_rows == 0 {
            return Ok(());
        }
        let view = ndarray::ArrayView2::from_shape((n_rows, width), x)
            .map_err(|e| err(BmsStatus::LengthMismatch, e.to_string()))?;
        let p = m.model.predict(view)?;
        if p.len() != n_rows {
            return Err(err(
                BmsStatus::Model,
                format!("the model gave {} probabilities for {n_rows} rows", p.len()),
            ));
        }
        for (o, v) in probs.iter_mut().zip(p.iter()) {
            *o = *v;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Frame features
// ---------------------------------------------------------------------------------------

/// The features of one frame (SPEC §3). NaN readings are excluded; a statistic over no
/// valid value is NaN and an index -1.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BmsFrameFeatures {
    pub cell_v_max: f64,
    pub cell_v_min: f64,
    pub cell_v_spread: f64,
    pub cell_v_mean: f64,
    /// Population standard deviation.
    pub cell_v_std: f64,
    /// 0-based index of the first maximal valid cell, -1 if none.
    pub cell_v_max_idx: i64,
    /// 0-based index of the first minimal valid cell, -1 if none.
    pub cell_v_min_idx: i64,
    pub temp_max: f64,
    pub temp_min: f64,
    pub temp_delta: f64,
    pub temp_mean: f64,
    /// Max − min of per-cell SOC (through the OCV curve), percentage points.
    pub soc_deviation: f64,
    /// BMS SOC − mean per-cell SOC, percentage points.
    pub soc_bias: f64,
    /// Alarm bit 10 of the flags, or the spread rule when the frame has no flags.
    pub consistency_alarm: bool,
}

fn index(i: Option<usize>) -> i64 {
    i.map_or(-1, |i| i as i64)
}

/// Computes the features of one frame: `soc` is the BMS pack SOC (%), `cells` the
/// `n_cells` cell voltages (V), `temps` the `n_temps` probe temperatures (°C), NaN for
/// invalid readings; `alarm_flags` the frame's GB/T 32960 general alarm flags or
/// `BMS_NO_ALARM_FLAGS`. `chemistry` is a `bms_chemistry`; `alarm_spread_v` the spread
/// rule's threshold (0.10 V by default). At least one cell and one probe are required.
/// This call builds the OCV curve each time; a `bms_monitor` builds it once.
///
/// # Safety
/// `cells`/`temps` point to `n_cells`/`n_temps` doubles; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_frame_compute_features(
    chemistry: u32,
    alarm_spread_v: f64,
    soc: f64,
    cells: *const f64,
    n_cells: usize,
    temps: *const f64,
    n_temps: usize,
    alarm_flags: i64,
    out: *mut BmsFrameFeatures,
) -> BmsStatus {
    boundary("bms_frame_compute_features", || {
        let config = FeatureConfig::new(
            OcvCurve::for_chemistry(parse_chemistry(chemistry)?),
            alarm_spread_v,
        )?;
        let frame = frame_ref(
            0,
            f64::NAN,
            f64::NAN,
            soc,
            cells,
            n_cells,
            temps,
            n_temps,
            alarm_flags,
        )?;
        let out = out_ptr(out, "out")?;
        let f = frame_features(&frame, &config);
        write(
            out,
            BmsFrameFeatures {
                cell_v_max: f.cell_v_max,
                cell_v_min: f.cell_v_min,
                cell_v_spread: f.cell_v_spread,
                cell_v_mean: f.cell_v_mean,
                cell_v_std: f.cell_v_std,
                cell_v_max_idx: index(f.cell_v_max_idx),
                cell_v_min_idx: index(f.cell_v_min_idx),
                temp_max: f.temp_max,
                temp_min: f.temp_min,
                temp_delta: f.temp_delta,
                temp_mean: f.temp_mean,
                soc_deviation: f.soc_deviation,
                soc_bias: f.soc_bias,
                consistency_alarm: f.consistency_alarm,
            },
        );
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
fn frame_ref<'a>(
    timestamp_ms: i64,
    pack_v: f64,
    pack_i: f64,
    soc: f64,
    cells: *const f64,
    n_cells: usize,
    temps: *const f64,
    n_temps: usize,
    flags: i64,
) -> FfiResult<FrameRef<'a>> {
    let cell_voltages = slice(cells, n_cells, "cells")?;
    let temperatures = slice(temps, n_temps, "temps")?;
    if cell_voltages.is_empty() {
        return Err(err(
            BmsStatus::InvalidArgument,
            "n_cells is 0 (at least one cell voltage is required)",
        ));
    }
    if temperatures.is_empty() {
        return Err(err(
            BmsStatus::InvalidArgument,
            "n_temps is 0 (at least one temperature is required)",
        ));
    }
    Ok(FrameRef {
        vin: "",
        timestamp_ms,
        pack_voltage: pack_v,
        pack_current: pack_i,
        soc,
        cell_voltages,
        temperatures,
        alarm_flags: parse_alarm_flags(flags)?,
    })
}

// ---------------------------------------------------------------------------------------
// Daily rows and the streaming monitor
// ---------------------------------------------------------------------------------------

/// One vehicle-day of the daily table (SPEC §4). A day without frames has NaN everywhere
/// except `frames = 0`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BmsDailyRow {
    /// The calendar day (at the monitor's UTC offset) as days since 1970-01-01.
    pub day: i64,
    pub total_voltage: f64,
    pub total_current: f64,
    pub cell_max_voltage: f64,
    pub cell_min_voltage: f64,
    pub max_temperature: f64,
    pub min_temperature: f64,
    pub spread_mean: f64,
    pub spread_max: f64,
    pub temp_delta_max: f64,
    pub soc_deviation_mean: f64,
    /// Number of frames of the day.
    pub frames: f64,
    /// 1 when a frame of the day had the consistency alarm, 0 if none did, NaN without
    /// frames.
    pub label: f64,
}

/// How a monitor turns frames into days. Start from `bms_monitor_config_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BmsMonitorConfig {
    /// Where calendar days start, seconds east of UTC (Beijing: 28800); |offset| < 1 day.
    pub utc_offset_seconds: i32,
    /// A `bms_chemistry`: the OCV curve of the SOC features.
    pub chemistry: u32,
    /// Spread (V) above which a frame without alarm flags counts as an alarm frame.
    pub alarm_spread_v: f64,
}

/// The default configuration: UTC days, NMC, 0.10 V.
#[unsafe(no_mangle)]
pub extern "C" fn bms_monitor_config_default() -> BmsMonitorConfig {
    BmsMonitorConfig {
        utc_offset_seconds: 0,
        chemistry: BmsChemistry::Nmc as u32,
        alarm_spread_v: DEFAULT_ALARM_SPREAD_V,
    }
}

fn daily_row(d: &ClosedDay) -> BmsDailyRow {
    let v = |c: DailyColumn| d.get(c);
    BmsDailyRow {
        day: d.day(),
        total_voltage: v(DailyColumn::TotalVoltage),
        total_current: v(DailyColumn::TotalCurrent),
        cell_max_voltage: v(DailyColumn::CellMaxVoltage),
        cell_min_voltage: v(DailyColumn::CellMinVoltage),
        max_temperature: v(DailyColumn::MaxTemperature),
        min_temperature: v(DailyColumn::MinTemperature),
        spread_mean: v(DailyColumn::SpreadMean),
        spread_max: v(DailyColumn::SpreadMax),
        temp_delta_max: v(DailyColumn::TempDeltaMax),
        soc_deviation_mean: v(DailyColumn::SocDeviationMean),
        frames: v(DailyColumn::Frames),
        label: d.label(),
    }
}

/// The streaming monitor of one vehicle (opaque). Not for concurrent use.
///
/// Memory is fixed at `bms_monitor_new`: the open day's accumulator, a ring of the last
/// C closed days (C = the model's context) and one window buffer; pushing a frame
/// allocates nothing.
pub struct BmsMonitor {
    monitor: Monitor,
}

/// Makes a monitor for one vehicle scored by `model` (which the monitor keeps a reference
/// to: freeing the model first is allowed). `config` NULL means the default
/// configuration. On success `*out` receives a monitor to release with
/// `bms_monitor_free`.
///
/// # Safety
/// `model` is NULL or a live model; `config` NULL or readable; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_monitor_new(
    model: *const BmsModel,
    config: *const BmsMonitorConfig,
    out: *mut *mut BmsMonitor,
) -> BmsStatus {
    boundary("bms_monitor_new", || {
        let m = non_null(model, "model")?;
        // SAFETY: NULL or readable by contract.
        let config = unsafe { config.as_ref() }
            .copied()
            .unwrap_or_else(|| bms_monitor_config_default());
        let out = out_ptr(out, "out")?;
        let utc_offset = UtcOffset::from_seconds(config.utc_offset_seconds)?;
        let features = FeatureConfig::new(
            OcvCurve::for_chemistry(parse_chemistry(config.chemistry)?),
            config.alarm_spread_v,
        )?;
        let monitor = Monitor::new(
            Arc::clone(&m.model),
            MonitorConfig {
                features,
                utc_offset,
            },
        )?;
        write(out, Box::into_raw(Box::new(BmsMonitor { monitor })));
        Ok(())
    })
}

/// Releases a monitor. NULL is a no-op.
///
/// # Safety
/// `monitor` is NULL or a monitor from `bms_monitor_new` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_monitor_free(monitor: *mut BmsMonitor) {
    // SAFETY: made by Box::into_raw in bms_monitor_new, freed once by contract.
    unsafe { free_handle(monitor) }
}

/// Adds one frame of the vehicle: `timestamp_ms` (ms since the Unix epoch, UTC), pack
/// voltage (V), pack current (A, the source's sign), BMS SOC (%), `n_cells` cell voltages
/// (V), `n_temps` probe temperatures (°C) — NaN for invalid readings — and the GB/T 32960
/// general alarm flags or `BMS_NO_ALARM_FLAGS`.
///
/// A frame on a later calendar day than the open one closes the open day (and adds an
/// empty day for each calendar day without frames in between) before opening its own.
/// Frames must arrive in strictly increasing time: an older timestamp returns
/// `BMS_STATUS_OUT_OF_ORDER`, an equal one `BMS_STATUS_DUPLICATE_TIMESTAMP`, and in both
/// cases (as for every error) the monitor is left exactly as it was. Allocates nothing.
///
/// # Safety
/// `monitor` is NULL or a live monitor; `cells`/`temps` point to `n_cells`/`n_temps`
/// doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_monitor_push_frame(
    monitor: *mut BmsMonitor,
    timestamp_ms: i64,
    pack_v: f64,
    pack_i: f64,
    soc: f64,
    cells: *const f64,
    n_cells: usize,
    temps: *const f64,
    n_temps: usize,
    alarm_flags: i64,
) -> BmsStatus {
    boundary("bms_monitor_push_frame", || {
        let m = non_null_mut(monitor, "monitor")?;
        let frame = frame_ref(
            timestamp_ms,
            pack_v,
            pack_i,
            soc,
            cells,
            n_cells,
            temps,
            n_temps,
            alarm_flags,
        )?;
        m.monitor.push_frame(&frame)?;
        Ok(())
    })
}

/// Moves the monitor's clock to `timestamp_ms` without a frame: if that is on a later
/// calendar day than the open day, the open day and any empty days before it are closed
/// (a vehicle parked past midnight still gets its window). Later frames must not be
/// older than `timestamp_ms`. Before the first frame this only sets that floor (the
/// vehicle's history starts at its first frame).
///
/// # Safety
/// `monitor` is NULL or a live monitor.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_monitor_advance_to(
    monitor: *mut BmsMonitor,
    timestamp_ms: i64,
) -> BmsStatus {
    boundary("bms_monitor_advance_to", || {
        let m = non_null_mut(monitor, "monitor")?;
        m.monitor.advance_to(timestamp_ms)?;
        Ok(())
    })
}

/// The probability of the current window: the last C closed days (C = the model's
/// context), scoring the open day — the same window `bms windows` dates with the open
/// day. `BMS_STATUS_NOT_READY` until C days have closed.
///
/// # Safety
/// `monitor` is NULL or a live monitor; `prob` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_monitor_predict(
    monitor: *mut BmsMonitor,
    prob: *mut f32,
) -> BmsStatus {
    boundary("bms_monitor_predict", || {
        let m = non_null_mut(monitor, "monitor")?;
        let prob = out_ptr(prob, "prob")?;
        write(prob, m.monitor.predict()?);
        Ok(())
    })
}

/// Number of closed days held (at most the model's context C).
///
/// # Safety
/// `monitor` is NULL or a live monitor; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_monitor_days(
    monitor: *const BmsMonitor,
    out: *mut usize,
) -> BmsStatus {
    boundary("bms_monitor_days", || {
        let m = non_null(monitor, "monitor")?;
        write(out_ptr(out, "out")?, m.monitor.days_held());
        Ok(())
    })
}

/// Total number of days closed since the monitor was made (including those no longer
/// held): compare before and after a push to see how many days it closed.
///
/// # Safety
/// As `bms_monitor_days`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_monitor_days_closed(
    monitor: *const BmsMonitor,
    out: *mut u64,
) -> BmsStatus {
    boundary("bms_monitor_days_closed", || {
        let m = non_null(monitor, "monitor")?;
        write(out_ptr(out, "out")?, m.monitor.days_closed());
        Ok(())
    })
}

/// A held closed day: `age` 0 is the most recently closed day, `age` 1 the one before,
/// up to `bms_monitor_days() - 1`; beyond that `BMS_STATUS_OUT_OF_RANGE`.
///
/// # Safety
/// `monitor` is NULL or a live monitor; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_monitor_day(
    monitor: *const BmsMonitor,
    age: usize,
    out: *mut BmsDailyRow,
) -> BmsStatus {
    boundary("bms_monitor_day", || {
        let m = non_null(monitor, "monitor")?;
        let out = out_ptr(out, "out")?;
        let day = m.monitor.day(age).ok_or_else(|| {
            err(
                BmsStatus::OutOfRange,
                format!(
                    "age {age} but {} closed days are held",
                    m.monitor.days_held()
                ),
            )
        })?;
        write(out, daily_row(day));
        Ok(())
    })
}

/// The open day (days since 1970-01-01 at the monitor's UTC offset): the date the
/// current window scores. `BMS_STATUS_NOT_READY` before the first frame.
///
/// # Safety
/// `monitor` is NULL or a live monitor; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_monitor_current_day(
    monitor: *const BmsMonitor,
    out: *mut i64,
) -> BmsStatus {
    boundary("bms_monitor_current_day", || {
        let m = non_null(monitor, "monitor")?;
        let out = out_ptr(out, "out")?;
        let day = m
            .monitor
            .current_day()
            .ok_or_else(|| err(BmsStatus::NotReady, "no frame pushed yet"))?;
        write(out, day);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// GB/T 32960 decoder
// ---------------------------------------------------------------------------------------

/// The streaming GB/T 32960.3 decoder (opaque; both editions, told per packet): bytes in
/// pieces of any size, frames out. Not for concurrent use.
pub struct BmsGbt32960Decoder {
    decoder: Decoder,
    /// The last frame's VIN, NUL-terminated, borrowed by `BmsGbt32960Frame::vin`.
    vin: [u8; 18],
}

/// A frame decoded from a realtime (`0x02`) or reissue (`0x03`) packet, in the fields of
/// `bms_monitor_push_frame`. `vin`, `cells` and `temps` point into the decoder and stay
/// valid until the next call on it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BmsGbt32960Frame {
    /// The packet's VIN, NUL-terminated.
    pub vin: *const c_char,
    /// The data unit's time, ms since the Unix epoch (UTC).
    pub timestamp_ms: i64,
    /// V, A (the source's sign: discharge positive), %; NaN when the packet had no vehicle
    /// item or the value was invalid.
    pub pack_voltage: f64,
    pub pack_current: f64,
    pub soc: f64,
    /// Cell voltages (V), in pack then cell order; NaN for invalid readings.
    pub cells: *const f64,
    pub n_cells: usize,
    /// Probe temperatures (°C); NaN for invalid readings.
    pub temps: *const f64,
    pub n_temps: usize,
    /// The general alarm flags, or `BMS_NO_ALARM_FLAGS` when the packet had none.
    pub alarm_flags: i64,
    /// Stream byte offset of the packet's first byte.
    pub offset: u64,
    /// 2016 or 2025.
    pub edition: u16,
    /// `0x02` realtime or `0x03` reissue.
    pub command: u8,
}

/// What a decoder has seen so far. `bytes` = bytes of accepted packets + `error_bytes`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BmsGbt32960Counts {
    /// Bytes consumed (accepted packets and refused bytes).
    pub bytes: u64,
    /// Packets accepted (every command).
    pub packets: u64,
    /// Frames produced.
    pub frames: u64,
    /// Accepted realtime/reissue packets without cell voltages or temperatures.
    pub no_frame: u64,
    /// Accepted reply packets.
    pub replies: u64,
    /// Packets or byte runs refused, and their bytes.
    pub errors: u64,
    pub error_bytes: u64,
}

fn counts_of(c: &DecodeCounts) -> BmsGbt32960Counts {
    BmsGbt32960Counts {
        bytes: c.bytes,
        packets: c.packets(),
        frames: c.frames,
        no_frame: c.no_frame,
        replies: c.replies,
        errors: c.errors,
        error_bytes: c.error_bytes,
    }
}

/// Makes a decoder; on success `*out` receives one to release with
/// `bms_gbt32960_decoder_free`.
///
/// # Safety
/// `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_gbt32960_decoder_new(out: *mut *mut BmsGbt32960Decoder) -> BmsStatus {
    boundary("bms_gbt32960_decoder_new", || {
        let out = out_ptr(out, "out")?;
        let d = BmsGbt32960Decoder {
            decoder: Decoder::new(),
            vin: [0; 18],
        };
        write(out, Box::into_raw(Box::new(d)));
        Ok(())
    })
}

/// Releases a decoder. NULL is a no-op.
///
/// # Safety
/// `decoder` is NULL or a decoder from `bms_gbt32960_decoder_new` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_gbt32960_decoder_free(decoder: *mut BmsGbt32960Decoder) {
    // SAFETY: made by Box::into_raw in bms_gbt32960_decoder_new, freed once by contract.
    unsafe { free_handle(decoder) }
}

/// Appends `len` bytes of the stream (any piece: a TCP read, one byte, a whole file). The
/// decoder copies them; it holds at most one incomplete packet beyond what
/// `bms_gbt32960_decoder_next_frame` has not yet drained, so drain after each push.
///
/// # Safety
/// `decoder` is NULL or a live decoder; `bytes` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_gbt32960_decoder_push(
    decoder: *mut BmsGbt32960Decoder,
    bytes: *const u8,
    len: usize,
) -> BmsStatus {
    boundary("bms_gbt32960_decoder_push", || {
        let d = non_null_mut(decoder, "decoder")?;
        let bytes = slice(bytes, len, "bytes")?;
        d.decoder.push(bytes);
        Ok(())
    })
}

/// Marks the end of the stream: what is left (a truncated packet, bytes that are not a
/// packet) is then reported by `bms_gbt32960_decoder_next_frame`. Pushing more bytes after
/// it continues the stream.
///
/// # Safety
/// `decoder` is NULL or a live decoder.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_gbt32960_decoder_finish(
    decoder: *mut BmsGbt32960Decoder,
) -> BmsStatus {
    boundary("bms_gbt32960_decoder_finish", || {
        non_null_mut(decoder, "decoder")?.decoder.finish();
        Ok(())
    })
}

/// The next frame of the stream pushed so far. Returns `BMS_STATUS_OK` with `*out` written;
/// `BMS_STATUS_BAD_PACKET` for a refused packet (`bms_last_error_message()` names its
/// byte offset, command, VIN and reason; call again to go on); or `BMS_STATUS_NOT_READY`
/// when the decoder needs more bytes (after `bms_gbt32960_decoder_finish`: the stream is
/// exhausted). Packets that carry no frame (logins, heartbeats, replies…) are skipped and
/// counted.
///
/// # Safety
/// `decoder` is NULL or a live decoder; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_gbt32960_decoder_next_frame(
    decoder: *mut BmsGbt32960Decoder,
    out: *mut BmsGbt32960Frame,
) -> BmsStatus {
    boundary("bms_gbt32960_decoder_next_frame", || {
        let d = non_null_mut(decoder, "decoder")?;
        let out = out_ptr(out, "out")?;
        loop {
            match d.decoder.next() {
                None => return Err(err(BmsStatus::NotReady, "the decoder needs more bytes")),
                Some(Event::Packet(_)) => continue,
                Some(Event::Error(e)) => return Err(err(BmsStatus::BadPacket, e.to_string())),
                Some(Event::Frame(info, f)) => {
                    // A VIN is at most 17 printable ASCII bytes (checked by the decoder).
                    let n = f.vin.len().min(17);
                    d.vin = [0; 18];
                    d.vin[..n].copy_from_slice(&f.vin.as_bytes()[..n]);
                    write(
                        out,
                        BmsGbt32960Frame {
                            vin: d.vin.as_ptr().cast(),
                            timestamp_ms: f.timestamp_ms,
                            pack_voltage: f.pack_voltage,
                            pack_current: f.pack_current,
                            soc: f.soc,
                            cells: f.cell_voltages.as_ptr(),
                            n_cells: f.cell_voltages.len(),
                            temps: f.temperatures.as_ptr(),
                            n_temps: f.temperatures.len(),
                            alarm_flags: f.alarm_flags.map_or(BMS_NO_ALARM_FLAGS, i64::from),
                            offset: info.offset,
                            edition: info.edition.year(),
                            command: info.command,
                        },
                    );
                    return Ok(());
                }
            }
        }
    })
}

/// The decoder's counts so far.
///
/// # Safety
/// `decoder` is NULL or a live decoder; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bms_gbt32960_decoder_counts(
    decoder: *const BmsGbt32960Decoder,
    out: *mut BmsGbt32960Counts,
) -> BmsStatus {
    boundary("bms_gbt32960_decoder_counts", || {
        let d = non_null(decoder, "decoder")?;
        write(out_ptr(out, "out")?, counts_of(d.decoder.counts()));
        Ok(())
    })
}
