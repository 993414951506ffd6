//! End-to-end tests of `bms simulate`, run through the built binary.

mod common;

use common::{bms, ok, p};

const FLEET: [&str; 11] = [
    "simulate",
    "--vehicles",
    "3",
    "--days",
    "15",
    "--seed",
    "5",
    "--interval",
    "60s",
    "--start",
    "2024-03-01",
];

#[test]
fn simulate_frames_and_daily_agree_with_bms_daily() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let (frames_csv, frames_pq, daily, truth) =
        (d("f.csv"), d("f.parquet"), d("daily.csv"), d("truth.csv"));
    let mut args: Vec<&str> = FLEET.to_vec();
    args.extend([
        "--frames",
        p(&frames_csv),
        "--daily",
        p(&daily),
        "--truth",
        p(&truth),
    ]);
    let out = ok(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("frames/s") && stderr.contains("warning: interval"),
        "{stderr}"
    );

    let from_frames = d("daily_from_frames.csv");
    ok(&["daily", "-i", p(&frames_csv), "-o", p(&from_frames)]);
    let expected = std::fs::read(&daily).unwrap();
    assert_eq!(std::fs::read(&from_frames).unwrap(), expected);

    // Daily-only mode, and Parquet frames through `bms daily`, give the same table.
    let daily_only = d("daily_only.csv");
    let mut args: Vec<&str> = FLEET.to_vec();
    args.extend(["--daily", p(&daily_only)]);
    ok(&args);
    assert_eq!(std::fs::read(&daily_only).unwrap(), expected);
    let mut args: Vec<&str> = FLEET.to_vec();
    args.extend(["--frames", p(&frames_pq)]);
    ok(&args);
    let from_pq = d("daily_from_pq.csv");
    ok(&["daily", "-i", p(&frames_pq), "-o", p(&from_pq)]);
    assert_eq!(std::fs::read(&from_pq).unwrap(), expected);

    let text = std::fs::read_to_string(&daily).unwrap();
    assert!(text.starts_with("VIN,Date,TotalVoltage"));
    assert!(text.lines().nth(1).unwrap().contains(",2024-03-"));
    let truth = std::fs::read_to_string(&truth).unwrap();
    let lines: Vec<&str> = truth.lines().collect();
    assert_eq!(lines[0], bms_core::simulate::TRUTH_HEADER);
    assert_eq!(lines.len(), 4);
    for line in &lines[1..] {
        let vin = line.split(',').next().unwrap();
        assert_eq!(vin.len(), 17);
        assert!(!vin.contains(['I', 'O', 'Q']));
        assert!(text.contains(vin));
    }
}

#[test]
fn simulate_rejects_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let never = dir.path().join("never.csv");
    let out = bms(&["simulate", "--vehicles", "0", "--daily", p(&never)]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("vehicles"), "{e}");

    let out = bms(&["simulate", "--interval", "10x", "--daily", p(&never)]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("10x"), "{e}");

    let out = bms(&["simulate", "--vehicles", "2"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--frames") && e.contains("--daily"), "{e}");

    let txt = dir.path().join("never.txt");
    let out = bms(&[
        "simulate",
        "--vehicles",
        "1",
        "--days",
        "2",
        "--daily",
        p(&txt),
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("extension"), "{e}");
    assert!(!txt.exists() && !never.exists());
}
