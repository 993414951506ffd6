//! `bms demo`: one command from nothing to stores and report, from any directory.

mod common;

use bms_batch::store::SqliteStore;
use common::text;

#[test]
fn demo_writes_every_store_and_the_report_from_anywhere() {
    let cwd = tempfile::tempdir().unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bms"))
            .args(["demo", "--vehicles", "10", "--days", "45", "--seed", "2"])
            .current_dir(cwd.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let stdout = run();
    // The default directory is relative to where it runs; the model is built in.
    let dir = cwd.path().join("out/demo");
    for f in [
        "report.html",
        "predictions.parquet",
        "events.jsonl",
        "results.sqlite",
        "summary.json",
        "rejects.csv",
        "daily.csv",
        "truth.csv",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
        assert!(stdout.contains(f), "stdout does not mention {f}:\n{stdout}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&text(&dir.join("summary.json"))).unwrap();
    let scored = summary["scored"].as_u64().unwrap();
    // 10 vehicles with up to 45 − 14 windows each.
    assert!(scored > 0 && scored <= 10 * 31, "{scored}");
    assert_eq!(summary["model_id"], "consistency-ref14x6-v1");
    assert!(
        stdout.contains(&format!("{scored} windows scored")),
        "{stdout}"
    );
    assert_eq!(
        text(&dir.join("events.jsonl")).lines().count() as u64,
        scored
    );
    let rows = || {
        SqliteStore::open(&dir.join("results.sqlite"))
            .unwrap()
            .all()
            .unwrap()
    };
    let first = rows();
    assert_eq!(first.len() as u64, scored);
    // Running it again (same seed) changes nothing in the key-value store.
    run();
    assert_eq!(rows(), first);
}
