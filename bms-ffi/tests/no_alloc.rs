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
