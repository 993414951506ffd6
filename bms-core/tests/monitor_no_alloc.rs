//! `Monitor::push_frame` and `Monitor::advance_to` allocate nothing: a counting global
//! allocator sees zero allocations while a simulated vehicle's frames (96 cells, day
//! closes, parked gaps, more days than the ring holds) stream through a monitor.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;

use bms_core::simulate::{SimConfig, for_each_frame};
use bms_core::{Frame, Model, Monitor};

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
fn push_frame_and_advance_to_do_not_allocate() {
    let config = SimConfig {
        vehicles: 1,
        days: 40,
        seed: 5,
        interval_ms: 30_000,
        cells: 96,
        ..SimConfig::default()
    };
    let mut frames: Vec<Frame> = Vec::new();
    for_each_frame(&config, 0, |f| {
        frames.push(f.to_owned());
        Ok(())
    })
    .unwrap();
    // Half the frames without alarm flags: the spread rule path too.
    for f in frames.iter_mut().step_by(2) {
        f.alarm_flags = None;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/consistency-ref14x6.onnx");
    let model = Arc::new(Model::load(path).unwrap());
    let mut mon = Monitor::new(model, config.daily_config()).unwrap();
    let last = frames.last().unwrap().timestamp_ms;

    // The counter works: a Vec allocates.
    let before = allocations();
    drop(std::hint::black_box(vec![1u8; 10]));
    assert_eq!(allocations(), before + 1);

    let before = allocations();
    for f in &frames {
        mon.push_frame(&f.as_ref()).unwrap();
    }
    mon.advance_to(last + 20 * 86_400_000).unwrap();
    let pushes = allocations() - before;

    assert_eq!(
        pushes,
        0,
        "{} frames of {} cells allocated {pushes} times",
        frames.len(),
        frames[0].cell_voltages.len()
    );
    // The stream really closed days and wrapped the ring.
    assert!(frames.len() > 1000, "{} frames", frames.len());
    assert!(mon.days_closed() >= 50, "{} days closed", mon.days_closed());
    assert_eq!(mon.days_held(), 14);
    assert!((0.0..=1.0).contains(&mon.predict().unwrap()));
}
