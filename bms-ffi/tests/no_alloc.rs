//! `bms_monitor_push_frame` allocates nothing: a counting global allocator sees zero
//! allocations while a simulated vehicle's frames (96 cells, day closes, parked gaps,
//! more days than the ring holds) stream through a monitor.

#[allow(dead_code)]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bms_core::simulate::SimConfig;
use bms_ffi::*;
use common::{load_model, new_monitor, push, vehicle_frames};

struct Counting;

thread_local! {
    /// Allocations made by this thread (the test harness's own threads are not counted).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the allocator may run while this thread's locals are being destroyed.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, layout, new_size) }
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn push_frame_does_not_allocate() {
    let config = SimConfig {
        vehicles: 1,
        days: 40,
        seed: 5,
        interval_ms: 30_000,
        cells: 96,
        ..SimConfig::default()
    };
    let mut frames = vehicle_frames(&config, 0);
    // Half the frames without alarm flags: the spread rule path too.
    for f in frames.iter_mut().step_by(2) {
        f.alarm_flags = None;
    }
    let model = load_model();
    let mon = new_monitor(model);

    // The counter works: a Vec allocates.
    let before = allocations();
    drop(std::hint::black_box(vec![1u8; 10]));
    assert_eq!(allocations(), before + 1);

    let before = allocations();
    for f in &frames {
        let s = push(mon, f);
        assert_eq!(s, BmsStatus::Ok);
    }
    let pushes = allocations() - before;

    let (mut closed, mut held) = (0u64, 0usize);
    let mut p = 0f32;
    unsafe {
        assert_eq!(bms_monitor_days_closed(mon, &mut closed), BmsStatus::Ok);
        assert_eq!(bms_monitor_days(mon, &mut held), BmsStatus::Ok);
        assert_eq!(bms_monitor_predict(mon, &mut p), BmsStatus::Ok);
        bms_monitor_free(mon);
        bms_model_free(model);
    }
    assert_eq!(
        pushes,
        0,
        "{} frames of {} cells allocated {pushes} times",
        frames.len(),
        frames[0].cell_voltages.len()
    );
    // The stream really closed days and wrapped the ring.
    assert!(frames.len() > 1000, "{} frames", frames.len());
    assert!(closed >= 30, "{closed} days closed");
    assert_eq!(held, 14);
    assert!((0.0..=1.0).contains(&p));
}

/// `bms_gbt32960_decoder_push` + `_next_frame` allocate nothing once the decoder's buffers
/// have grown to the stream's largest packet: a simulated vehicle's frames as 2016 realtime
/// packets (96 cells, so split cell entries are not involved; 32 probes), pushed in 4 KiB
/// pieces, after a warm-up of the first packets.
#[test]
fn decoder_does_not_allocate_after_warm_up() {
    use bms_core::gbt32960::{Edition, command, encode};
    let config = SimConfig {
        vehicles: 1,
        days: 10,
        seed: 6,
        interval_ms: 30_000,
        cells: 96,
        ..SimConfig::default()
    };
    let frames = vehicle_frames(&config, 0);
    let mut bytes = Vec::new();
    for f in &frames {
        encode::frame_packet_into(&mut bytes, Edition::V2016, command::REALTIME, &f.as_ref())
            .unwrap();
    }
    let mut d = std::ptr::null_mut();
    let mut frame = std::mem::MaybeUninit::<BmsGbt32960Frame>::uninit();
    let mut decoded = 0usize;
    let mut drain = |d: *mut BmsGbt32960Decoder| unsafe {
        loop {
            match bms_gbt32960_decoder_next_frame(d, frame.as_mut_ptr()) {
                BmsStatus::Ok => decoded += 1,
                BmsStatus::NotReady => break,
                s => panic!(
                    "{s:?}: {:?}",
                    std::ffi::CStr::from_ptr(bms_last_error_message())
                ),
            }
        }
    };
    let pieces: Vec<&[u8]> = bytes.chunks(4096).collect();
    let warm = 8;
    let pushes;
    unsafe {
        assert_eq!(bms_gbt32960_decoder_new(&mut d), BmsStatus::Ok);
        for p in &pieces[..warm] {
            assert_eq!(
                bms_gbt32960_decoder_push(d, p.as_ptr(), p.len()),
                BmsStatus::Ok
            );
            drain(d);
        }
        let before = allocations();
        for p in &pieces[warm..] {
            assert_eq!(
                bms_gbt32960_decoder_push(d, p.as_ptr(), p.len()),
                BmsStatus::Ok
            );
            drain(d);
        }
        pushes = allocations() - before;
        bms_gbt32960_decoder_free(d);
    }
    assert_eq!(decoded, frames.len());
    assert!(frames.len() > 1000, "{} frames", frames.len());
    assert_eq!(
        pushes,
        0,
        "{} packets allocated {pushes} times",
        frames.len()
    );
}
