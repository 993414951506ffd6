//! The readers of `bms evaluate` (`bms_core::evaluate`): the truth CSV, labelled windows
//! and predictions CSV. No panic, hang or unbounded allocation on any bytes; and whatever
//! they read evaluates without a panic, its counts adding up: every prediction is
//! evaluated, unlabelled or unmatched, and the lead-time histogram holds every vehicle
//! that alarms.
#![no_main]

use bms_core::evaluate::{AlarmHistory, EvalConfig, Scored, evaluate, read_scored_csv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the horizon; the rest is split at the first NUL into the
    // predictions and the labels.
    let Some((&h, rest)) = data.split_first() else {
        return;
    };
    let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (preds, labels) = (&rest[..cut], rest.get(cut + 1..).unwrap_or(&[]));
    let scores = read_scored_csv(preds, None);
    let histories = [
        AlarmHistory::from_truth_csv(labels, None),
        AlarmHistory::from_labelled_windows_csv(labels, None),
    ];
    let Ok(scores) = scores else { return };
    let scored: Vec<Scored<'_>> = scores
        .iter()
        .map(|(vin, date, prob)| Scored {
            vin,
            date: *date,
            prob: *prob,
        })
        .collect();
    let config = EvalConfig {
        threshold: 0.5,
        horizon: u32::from(h % 40),
    };
    for history in histories.into_iter().flatten() {
        let Ok(e) = evaluate(&scored, &history, &config) else {
            continue;
        };
        assert_eq!(e.predictions, scored.len() as u64);
        assert_eq!(e.window.windows + e.unlabelled + e.unmatched, e.predictions);
        if let Some(ev) = &e.events {
            let binned: u64 = ev.lead_histogram.iter().map(|b| b.vehicles).sum();
            assert_eq!(binned, ev.alarm_vehicles);
            assert!(ev.detected_7d <= ev.detected_3d && ev.detected_3d <= ev.detected_1d);
        }
        if let Some(auc) = e.window.roc_auc {
            assert!((0.0..=1.0).contains(&auc), "AUC {auc}");
        }
        if let Some(ap) = e.window.average_precision {
            assert!((0.0..=1.0 + 1e-9).contains(&ap), "AP {ap}");
        }
    }
});
