//! Helpers shared by the tests that call the C ABI from Rust.

use std::ffi::{CStr, CString};
use std::ptr;

use bms_core::Frame;
use bms_core::simulate::{SimConfig, for_each_frame};

use bms_ffi::*;

pub fn model_path() -> CString {
    CString::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/consistency-ref14x6.onnx"
    ))
    .unwrap()
}

pub fn last_error() -> String {
    unsafe { CStr::from_ptr(bms_last_error_message()) }
        .to_str()
        .unwrap()
        .to_owned()
}

pub fn load_model() -> *mut BmsModel {
    let mut m = ptr::null_mut();
    let s = unsafe { bms_model_load(model_path().as_ptr(), &mut m) };
    assert_eq!(s, BmsStatus::Ok, "{}", last_error());
    assert!(!m.is_null());
    m
}

pub fn new_monitor(model: *const BmsModel) -> *mut BmsMonitor {
    let mut mon = ptr::null_mut();
    let s = unsafe { bms_monitor_new(model, ptr::null(), &mut mon) };
    assert_eq!(s, BmsStatus::Ok, "{}", last_error());
    mon
}

pub fn push(mon: *mut BmsMonitor, f: &Frame) -> BmsStatus {
    unsafe {
        bms_monitor_push_frame(
            mon,
            f.timestamp_ms,
            f.pack_voltage,
            f.pack_current,
            f.soc,
            f.cell_voltages.as_ptr(),
            f.cell_voltages.len(),
            f.temperatures.as_ptr(),
            f.temperatures.len(),
            f.alarm_flags.map_or(BMS_NO_ALARM_FLAGS, i64::from),
        )
    }
}

pub fn vehicle_frames(config: &SimConfig, index: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    for_each_frame(config, index, |f| {
        frames.push(f.to_owned());
        Ok(())
    })
    .unwrap();
    frames
}
