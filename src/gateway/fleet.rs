//! One streaming [`Monitor`] per VIN, shared by every connection, and the predictions its
//! closed days give.
//!
//! The rule for which frames reach a monitor (frames are stored either way):
//!
//! - a realtime report (`02`) newer than the monitor's latest frame is pushed;
//! - a reissue report (`03`, data stored during an outage and sent later) is history only:
//!   it is never pushed, since its day has usually been closed already;
//! - a realtime report at or before the latest frame's time (a duplicate, or a clock that
//!   went back) is history only (the monitor refuses it and stays unchanged).
//!
//! When a pushed frame opens a later calendar day, the days in between are closed one at a
//! time ([`Monitor::advance_to`] the start of each) and every day on which a window is
//! ready is scored: the predictions are the windows `bms predict` makes from the same
//! in-order frames (one per day after the first C days, empty days included), with the
//! same event ids ([`Prediction::new`] → `bms_batch::store::event_id`).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use bms_batch::store::Prediction;
use bms_core::daily::date_of_day;
use bms_core::{BmsError, Frame, Model, Monitor, MonitorConfig};

const DAY_MS: i64 = 86_400_000;

/// What happened to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Pushed to the vehicle's monitor.
    Monitor,
    /// Kept as history only (a reissue, or not newer than the monitor's latest frame).
    History,
}

pub struct Fleet {
    model: Arc<Model>,
    config: MonitorConfig,
    threshold: f32,
    monitors: Mutex<HashMap<String, Arc<Mutex<Monitor>>>>,
}

impl Fleet {
    pub fn new(model: Arc<Model>, config: MonitorConfig, threshold: f32) -> anyhow::Result<Self> {
        // Checks the configuration and contract once, so that later monitors cannot fail.
        Monitor::new(model.clone(), config.clone())?;
        Ok(Fleet {
            model,
            config,
            threshold,
            monitors: Mutex::new(HashMap::new()),
        })
    }

    fn monitor(&self, vin: &str) -> Arc<Mutex<Monitor>> {
        let mut map = self.monitors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(vin) {
            return m.clone();
        }
        let m =
            Monitor::new(self.model.clone(), self.config.clone()).expect("checked by Fleet::new");
        let m = Arc::new(Mutex::new(m));
        map.insert(vin.to_owned(), m.clone());
        m
    }

    /// Number of vehicles with a monitor.
    pub fn vehicles(&self) -> usize {
        self.monitors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Feeds one frame (`reissue`: it came in a `03` packet); the predictions of the days
    /// it closed are appended to `out`.
    pub fn push(&self, frame: &Frame, reissue: bool, out: &mut Vec<Prediction>) -> Pushed {
        if reissue {
            return Pushed::History;
        }
        let m = self.monitor(&frame.vin);
        let mut mon = m.lock().unwrap_or_else(|p| p.into_inner());
        let offset_ms = i64::from(self.config.utc_offset.seconds()) * 1000;
        let day = self.config.utc_offset.day_number(frame.timestamp_ms);
        if let Some(open) = mon.current_day()
            && day > open + 1
        {
            for d in open + 1..day {
                let before = mon.days_closed();
                if mon.advance_to(d * DAY_MS - offset_ms).is_err() {
                    break;
                }
                if mon.days_closed() > before {
                    self.score(&mut mon, &frame.vin, out);
                }
            }
        }
        let before = mon.days_closed();
        match mon.push_frame(&frame.as_ref()) {
            Ok(()) => {
                if mon.days_closed() > before {
                    self.score(&mut mon, &frame.vin, out);
                }
                Pushed::Monitor
            }
            Err(BmsError::TimestampTooOld { .. } | BmsError::DuplicateTimestamp { .. }) => {
                Pushed::History
            }
            Err(e) => {
                eprintln!(
                    "bms gateway: VIN {} frame at {} ms kept as history only: {e}",
                    frame.vin, frame.timestamp_ms
                );
                Pushed::History
            }
        }
    }

    /// Scores the open day's window when one is ready.
    fn score(&self, mon: &mut Monitor, vin: &str, out: &mut Vec<Prediction>) {
        if !mon.is_ready() {
            return;
        }
        let Some(date) = mon.current_day().and_then(date_of_day) else {
            return;
        };
        let mut window = vec![0f32; mon.width()];
        if mon.window_into(&mut window).is_err() {
            return;
        }
        match catch_unwind(AssertUnwindSafe(|| mon.predict())) {
            Ok(Ok(p)) => out.push(Prediction::new(
                vin,
                date,
                p,
                self.threshold,
                &self.model.contract().model_id,
                window,
            )),
            Ok(Err(e)) => eprintln!("bms gateway: VIN {vin} {date}: model failed: {e}"),
            Err(_) => eprintln!("bms gateway: VIN {vin} {date}: model panicked"),
        }
    }
}
