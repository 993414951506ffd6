//! End-to-end tests of the `bms` binary: `daily` and `windows`.

mod common;

use common::{bms, ok, p, stderr, text};
use std::path::{Path, PathBuf};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/frames-small.csv")
}

#[test]
fn daily_then_windows_on_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let daily = dir.path().join("daily.csv");
    let out = ok(&["daily", "-i", p(&example()), "-o", p(&daily)]);
    assert!(
        stderr(&out).contains("read 1116 frames, accepted 1116, rejected 0"),
        "{}",
        stderr(&out)
    );
    let d = text(&daily);
    let header = d.lines().next().unwrap();
    assert!(header.starts_with("VIN,Date,TotalVoltage,TotalCurrent,CellMaxVoltage,CellMinVoltage,MaxTemperature,MinTemperature,Label,spread_mean"));
    // Dense calendar: every vehicle has consecutive dates from its first to its last day.
    let rows: Vec<Vec<&str>> = d.lines().skip(1).map(|l| l.split(',').collect()).collect();
    for w in rows.windows(2) {
        if w[0][0] == w[1][0] {
            let a: chrono::NaiveDate = w[0][1].parse().unwrap();
            let b: chrono::NaiveDate = w[1][1].parse().unwrap();
            assert_eq!(b - a, chrono::Duration::days(1));
        }
    }
    // The drifting vehicle alarms; the healthy ones do not.
    let alarms = |vin: &str| rows.iter().filter(|r| r[0] == vin && r[8] == "1.0").count();
    assert!(alarms("LSMALL00000000003") > 0);
    assert_eq!(alarms("LSMALL00000000001"), 0);

    let win = dir.path().join("w.csv");
    ok(&["windows", "-i", p(&daily), "-o", p(&win), "--labels"]);
    let w = text(&win);
    let first: Vec<&str> = w.lines().next().unwrap().split(',').collect();
    assert_eq!(first.len(), 2 + 84 + 1);
    // Each vehicle has (days − 14) windows.
    let days = |vin: &str| rows.iter().filter(|r| r[0] == vin).count();
    let n: usize = [
        "LSMALL00000000001",
        "LSMALL00000000002",
        "LSMALL00000000003",
    ]
    .iter()
    .map(|v| days(v).saturating_sub(14))
    .sum();
    assert_eq!(w.lines().count(), n);
    // Parquet daily output gives the same windows.
    let dpq = dir.path().join("daily.parquet");
    ok(&["daily", "-i", p(&example()), "-o", p(&dpq)]);
    let win2 = dir.path().join("w2.csv");
    ok(&["windows", "-i", p(&dpq), "-o", p(&win2), "--labels"]);
    assert_eq!(text(&win2), w);
}

/// Runs `bms args` with `input` on standard input; (stdout, stderr).
fn piped(args: &[&str], input: &[u8]) -> (Vec<u8>, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bms"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bms {args:?}: {err}");
    (out.stdout, err)
}

#[test]
fn dash_reads_stdin_and_writes_stdout_as_the_files_do() {
    let dir = tempfile::tempdir().unwrap();
    let daily = dir.path().join("daily.csv");
    ok(&["daily", "-i", p(&example()), "-o", p(&daily)]);
    let win = dir.path().join("w.csv");
    ok(&["windows", "-i", p(&daily), "-o", p(&win), "--labels"]);

    let frames = std::fs::read(example()).unwrap();
    let (daily_out, err) = piped(&["daily", "-i", "-", "-o", "-"], &frames);
    assert_eq!(daily_out, std::fs::read(&daily).unwrap());
    assert!(err.contains("<stdin>: read 1116 frames"), "{err}");
    assert!(err.contains("<stdout>: "), "{err}");
    let (win_out, err) = piped(&["windows", "-i", "-", "-o", "-", "--labels"], &daily_out);
    assert_eq!(win_out, std::fs::read(&win).unwrap());
    assert!(err.contains("<stdin>: read"), "{err}");

    // bms predict reads standard input too: the same predictions as from the file.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ref14x6.onnx");
    let from_file = ok(&["predict", "-m", p(&model), "-i", p(&win)]);
    let win_unlabelled = dir.path().join("w-plain.csv");
    ok(&["windows", "-i", p(&daily), "-o", p(&win_unlabelled)]);
    let from_file_plain = ok(&["predict", "-m", p(&model), "-i", p(&win_unlabelled)]);
    let (from_stdin, _) = piped(
        &["predict", "-m", p(&model), "-i", "-"],
        &std::fs::read(&win_unlabelled).unwrap(),
    );
    assert_eq!(from_stdin, from_file_plain.stdout);
    assert_eq!(
        from_file.stdout, from_file_plain.stdout,
        "labels do not change scores"
    );

    // Errors on standard input name it.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bms"))
        .args(["windows", "-i", "-", "-o", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("<stdin>"), "{}", stderr(&o));
}

#[test]
fn windows_options_change_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let daily = dir.path().join("daily.csv");
    ok(&["daily", "-i", p(&example()), "-o", p(&daily)]);
    let win = dir.path().join("w.csv");
    ok(&[
        "windows",
        "-i",
        p(&daily),
        "-o",
        p(&win),
        "--context",
        "7",
        "--features",
        "spread_mean,TotalVoltage",
        "--fill",
        "-999",
        "--full-horizon",
    ]);
    let w = text(&win);
    let first: Vec<&str> = w.lines().next().unwrap().split(',').collect();
    assert_eq!(first.len(), 2 + 14);
    assert!(w.contains("-999.0"), "fill value used for empty days");
    // SPEC §4: a fill the batch readers would refuse is refused up front, not written.
    for (fill, why) in [("inf", "not a finite number"), ("1e39", "32-bit")] {
        let bad = dir.path().join(format!("w-{fill}.csv"));
        let args = ["windows", "-i", p(&daily), "-o", p(&bad), "--fill", fill];
        let o = bms(&args);
        assert!(!o.status.success(), "--fill {fill}");
        assert!(
            stderr(&o).contains("fill value") && stderr(&o).contains(why),
            "{}",
            stderr(&o)
        );
        assert!(!bad.exists(), "--fill {fill} wrote {}", bad.display());
    }
}

#[test]
fn errors_are_clear_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("o.csv");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "daily".into(),
                "-i".into(),
                "/nonexistent/f.csv".into(),
                "-o".into(),
                o.display().to_string(),
            ],
            "/nonexistent/f.csv: No such file",
        ),
        (
            vec![
                "daily".into(),
                "-i".into(),
                example().display().to_string(),
                "-o".into(),
                dir.path().join("o.txt").display().to_string(),
            ],
            "cannot tell the format",
        ),
        (
            vec![
                "daily".into(),
                "-i".into(),
                example().display().to_string(),
                "-o".into(),
                o.display().to_string(),
                "--utc-offset".into(),
                "+25:00".into(),
            ],
            "invalid UTC offset",
        ),
        (
            vec![
                "daily".into(),
                "-i".into(),
                example().display().to_string(),
                "-o".into(),
                o.display().to_string(),
                "--ocv".into(),
                "xyz".into(),
            ],
            "neither nmc, lfp nor a readable CSV file",
        ),
        (
            vec![
                "windows".into(),
                "-i".into(),
                example().display().to_string(),
                "-o".into(),
                o.display().to_string(),
            ],
            "header: expected",
        ),
        (
            vec![
                "windows".into(),
                "-i".into(),
                example().display().to_string(),
                "-o".into(),
                o.display().to_string(),
                "--features".into(),
                "Volts".into(),
            ],
            "invalid daily column: 'Volts'",
        ),
        (
            vec![
                "windows".into(),
                "-i".into(),
                example().display().to_string(),
                "-o".into(),
                o.display().to_string(),
                "--context".into(),
                "0".into(),
            ],
            "context must be at least 1 day",
        ),
    ];
    // Durations the clock cannot hold are refused with the flag named, not a panic.
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/consistency-ref14x6.onnx")
        .display()
        .to_string();
    let mut cases = cases;
    for (flag, value) in [
        ("--timeout-secs", "1e300"),
        ("--drain-secs", "1e300"),
        ("--timeout-secs", "inf"),
        ("--drain-secs", "nan"),
    ] {
        cases.push((
            vec![
                "serve".into(),
                "-m".into(),
                model.clone(),
                "--port".into(),
                "0".into(),
                flag.into(),
                value.into(),
            ],
            flag,
        ));
    }
    // Negative numbers are values, refused by the flag that takes them.
    cases.push((
        vec![
            "windows".into(),
            "-i".into(),
            example().display().to_string(),
            "-o".into(),
            o.display().to_string(),
            "--context".into(),
            "-1".into(),
        ],
        "invalid value '-1' for '--context <CONTEXT>'",
    ));
    cases.push((
        vec![
            "serve".into(),
            "-m".into(),
            model.clone(),
            "--port".into(),
            "-1".into(),
        ],
        "invalid value '-1' for '--port <PORT>'",
    ));
    cases.push((
        vec![
            "predict".into(),
            "-m".into(),
            model.clone(),
            "-i".into(),
            example().display().to_string(),
            "--threshold".into(),
            "-1".into(),
        ],
        "--threshold -1 is not a probability",
    ));
    // Dates and offsets outside what SPEC allows.
    cases.push((
        vec![
            "daily".into(),
            "-i".into(),
            example().display().to_string(),
            "-o".into(),
            o.display().to_string(),
            "--utc-offset".into(),
            "-+8".into(),
        ],
        "invalid UTC offset",
    ));
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bms(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let e = stderr(&out);
        assert!(e.contains(want), "{args:?}: expected «{want}» in «{e}»");
        assert!(!e.contains("panicked"), "{e}");
    }
}

#[test]
fn lenient_mode_reports_and_writes_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("f.csv");
    let mut t = text(&example());
    t.push_str("LSMALL00000000001,notatime,1,2,3,1,1,1,1,1,1,1,1,1,1,1,1\nshort,line\n");
    std::fs::write(&frames, &t).unwrap();
    let o = dir.path().join("d.csv");
    let strict = bms(&["daily", "-i", p(&frames), "-o", p(&o)]);
    assert!(!strict.status.success());
    assert!(
        stderr(&strict).contains("line 1118, column 2 (timestamp)"),
        "{}",
        stderr(&strict)
    );
    assert!(!o.exists(), "no output on failure");
    let rej = dir.path().join("rejects.csv");
    let out = ok(&[
        "daily",
        "-i",
        p(&frames),
        "-o",
        p(&o),
        "--lenient",
        "--rejects",
        p(&rej),
    ]);
    assert!(
        stderr(&out).contains("read 1118 frames, accepted 1116, rejected 2"),
        "{}",
        stderr(&out)
    );
    let r = text(&rej);
    assert!(r.starts_with("line,reason\n1118,"), "{r}");
    assert!(r.contains("1119,\"expected 17 fields, found 2\""), "{r}");
    // A repeated (vin, timestamp) is a reject of its line in lenient mode, an error
    // naming both lines otherwise.
    let mut dup = text(&example());
    let second = dup.lines().nth(2).unwrap().to_owned();
    dup.push_str(&second);
    dup.push('\n');
    let dup_path = dir.path().join("dup.csv");
    std::fs::write(&dup_path, &dup).unwrap();
    let o_dup = dir.path().join("d-dup.csv");
    let strict = bms(&["daily", "-i", p(&dup_path), "-o", p(&o_dup)]);
    assert!(!strict.status.success());
    assert!(
        stderr(&strict).contains("lines 3 and 1118"),
        "{}",
        stderr(&strict)
    );
    let rej_dup = dir.path().join("rej-dup.csv");
    let lenient = ok(&[
        "daily",
        "-i",
        p(&dup_path),
        "-o",
        p(&o_dup),
        "--rejects",
        p(&rej_dup),
    ]);
    assert!(
        stderr(&lenient).contains("read 1117 frames, accepted 1116, rejected 1"),
        "{}",
        stderr(&lenient)
    );
    assert!(text(&rej_dup).contains("\n1118,"), "{}", text(&rej_dup));
    let clean = dir.path().join("d-clean.csv");
    ok(&["daily", "-i", p(&example()), "-o", p(&clean)]);
    assert_eq!(
        text(&o_dup),
        text(&clean),
        "the first frame is kept, the repeat left out"
    );
    // --rejects alone implies --lenient: the same output and the same rejects.
    let o2 = dir.path().join("d2.csv");
    let rej2 = dir.path().join("rejects2.csv");
    ok(&[
        "daily",
        "-i",
        p(&frames),
        "-o",
        p(&o2),
        "--rejects",
        p(&rej2),
    ]);
    assert_eq!(text(&rej2), r);
    assert_eq!(text(&o2), text(&o));
    // bms predict's --out is a directory, never standard output.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ref14x6.onnx");
    let bad = bms(&["predict", "-m", p(&model), "-i", p(&o), "--out", "-"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("--out takes a directory"),
        "{}",
        stderr(&bad)
    );
    assert!(!Path::new("-").exists(), "no directory named '-'");
}

#[test]
fn help_explains_every_flag() {
    for cmd in ["daily", "windows"] {
        let out = bms(&[cmd, "--help"]);
        assert!(out.status.success());
        let h = String::from_utf8_lossy(&out.stdout);
        for flag in ["--input", "--out", "--lenient"] {
            assert!(h.contains(flag), "{cmd} --help lacks {flag}");
        }
    }
    let h = String::from_utf8_lossy(&bms(&["daily", "--help"]).stdout).into_owned();
    assert!(h.contains("Beijing"), "{h}");
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures")
}

/// The batch lines of fixture input `rows` (NaN written as `nan`), and the golden
/// probabilities XGBoost itself gave for them.
fn fixture_batch(model_json: &str) -> (String, Vec<f64>) {
    let golden: serde_json::Value =
        serde_json::from_str(&text(&fixtures().join(model_json))).unwrap();
    let inputs: serde_json::Value =
        serde_json::from_str(&text(&fixtures().join("inputs.json"))).unwrap();
    let rows = inputs[golden["inputs"].as_str().unwrap()]
        .as_array()
        .unwrap();
    let mut batch = String::new();
    for (i, r) in rows.iter().enumerate() {
        let vals: Vec<String> = r
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().map_or("nan".to_owned(), |x| format!("{x:.18e}")))
            .collect();
        batch.push_str(&format!("V{i:03},2024-03-01,{}\n", vals.join(",")));
    }
    let probs = golden["framework"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (batch, probs)
}

#[test]
fn predict_scores_batch_lines_like_xgboost() {
    let dir = tempfile::tempdir().unwrap();
    let (mut batch, want) = fixture_batch("xgb_classifier.json");
    assert!(
        batch.contains("nan"),
        "the fixture exercises missing values"
    );
    batch.push_str("BAD,2024-03-01,1,2\n");
    let input = dir.path().join("batch.csv");
    std::fs::write(&input, &batch).unwrap();
    let model = fixtures().join("xgb_classifier.onnx");
    let out = ok(&["predict", "-m", p(&model), "-i", p(&input)]);
    let e = stderr(&out);
    assert!(e.contains("reference defaults"), "{e}");
    assert!(
        e.contains(&format!(
            "read {} lines, accepted {}, rejected 1",
            want.len() + 1,
            want.len()
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!("line {}: expected 86 fields", want.len() + 1)),
        "{e}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("vin,date,predicted_prob,alarm"));
    let got: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g[0], format!("V{i:03}"));
        assert_eq!(g[1], "2024-03-01");
        let p: f64 = g[2].parse().unwrap();
        assert!((p - w).abs() < 1e-6, "row {i}: {p} vs XGBoost {w}");
        assert_eq!(g[3], if p >= 0.5 { "1" } else { "0" });
    }
    // Strict mode stops at the bad line; a width mismatch with the model is a bad line.
    let strict = bms(&["predict", "-m", p(&model), "-i", p(&input), "--strict"]);
    assert!(!strict.status.success());
    assert!(
        stderr(&strict).contains("expected 86 fields"),
        "{}",
        stderr(&strict)
    );
    let meta = fixtures().join("xgb_metadata.onnx");
    let out = bms(&["predict", "-m", p(&meta), "-i", p(&input)]);
    assert!(
        stderr(&out).contains("contract from metadata: 7 days × 11 features = 77 values"),
        "{}",
        stderr(&out)
    );
    // Every line has the wrong width for this model: all rejected, and that is a failure.
    assert!(stderr(&out).contains("accepted 0"), "{}", stderr(&out));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("every one of its"),
        "{}",
        stderr(&out)
    );
    let bad = bms(&[
        "predict",
        "-m",
        fixtures().join("int_input.onnx").to_str().unwrap(),
        "-i",
        p(&input),
    ]);
    assert!(!bad.status.success());
    assert!(!stderr(&bad).contains("panicked"));
}

/// A CSV file as a header and rows of fields (no quoting in the files compared here).
fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let t = text(path);
    let mut lines = t.lines();
    let split = |l: &str| l.split(',').map(str::to_owned).collect::<Vec<_>>();
    let header = split(lines.next().unwrap());
    (header, lines.map(split).collect())
}

#[test]
fn a_simulated_capture_reads_back_as_the_simulated_frames_after_quantisation() {
    for edition in ["2016", "2025"] {
        let dir = tempfile::tempdir().unwrap();
        let frames = dir.path().join("frames.csv");
        let cap = dir.path().join("fleet.bin");
        let sim = [
            "simulate",
            "--vehicles",
            "3",
            "--days",
            "3",
            "--seed",
            "7",
            "--cells",
            "12",
            "--probes",
            "4",
        ];
        let mut args = sim.to_vec();
        args.extend([
            "--frames",
            p(&frames),
            "--gbt32960",
            p(&cap),
            "--edition",
            edition,
        ]);
        let out = ok(&args);
        assert!(stderr(&out).contains("packets"), "{}", stderr(&out));
        // The same capture on standard output.
        let mut args = sim.to_vec();
        args.extend(["--gbt32960", "-", "--edition", edition]);
        let bytes = std::fs::read(&cap).unwrap();
        assert_eq!(ok(&args).stdout, bytes);
        let start = if edition == "2016" { b"##" } else { b"$$" };
        assert_eq!(
            &bytes[..3],
            &[start[0], start[1], 0x01],
            "a login comes first"
        );

        let (h1, want) = csv_rows(&frames);
        let mut sim_vins: Vec<String> = want.iter().map(|r| r[0].clone()).collect();
        sim_vins.sort();
        sim_vins.dedup();
        assert!(sim_vins.len() >= 2, "{sim_vins:?}");

        let ingested = dir.path().join("out.csv");
        let out = ok(&["ingest", "-i", p(&cap), "-o", p(&ingested)]);
        let err = stderr(&out);
        let n = sim_vins.len();
        assert!(err.contains(&format!("vehicle login {n},")), "{err}");
        assert!(err.contains(&format!("vehicle logout {n})")), "{err}");
        assert!(err.contains(" 0 refused"), "{err}");

        let (h2, got) = csv_rows(&ingested);
        assert_eq!(h1, h2);
        assert_eq!(want.len(), got.len());
        // In time order across vehicles, as a platform receives them.
        let times: Vec<i64> = got.iter().map(|r| r[1].parse().unwrap()).collect();
        assert!(times.is_sorted());
        let switches = got.windows(2).filter(|w| w[0][0] != w[1][0]).count();
        assert!(switches >= n, "vehicles interleave: {switches} switches");
        // The capture interleaves vehicles by time; times are whole seconds.
        let key = |r: &Vec<String>| {
            let ms: i64 = r[1].parse().unwrap();
            (r[0].clone(), ms - ms.rem_euclid(1000))
        };
        let got: std::collections::HashMap<_, _> = got.iter().map(|r| (key(r), r)).collect();
        assert_eq!(got.len(), want.len(), "one frame per vehicle and second");
        // Half a quantum of each column (the simulator's cells, current, SOC and probes are
        // already on the protocol's grid, its pack voltage is not).
        let tolerance = |col: &str| match col {
            "pack_voltage" | "pack_current" => 0.05 + 1e-9,
            "soc" => 0.5,
            c if c.starts_with("cell_v_") => 0.0005 + 1e-12,
            c if c.starts_with("temp_") => 0.5,
            _ => 0.0,
        };
        for w in &want {
            let g = got[&key(w)];
            for (i, col) in h1.iter().enumerate().skip(2) {
                if col == "alarm_flags" {
                    assert_eq!(g[i], w[i], "{col} of {:?}", key(w));
                    continue;
                }
                let (a, b): (f64, f64) = (g[i].parse().unwrap(), w[i].parse().unwrap());
                assert!(
                    (a - b).abs() <= tolerance(col),
                    "{edition} {col} of {:?}: {a} read back, {b} simulated",
                    key(w)
                );
            }
        }

        // The daily table from the capture has the CSV's vehicles and days.
        let from_cap = dir.path().join("daily.csv");
        let from_csv = dir.path().join("daily-csv.csv");
        ok(&["daily", "-i", p(&cap), "-o", p(&from_cap)]);
        ok(&["daily", "-i", p(&frames), "-o", p(&from_csv)]);
        let days = |path: &Path| {
            let (h, rows) = csv_rows(path);
            assert_eq!(&h[..2], ["VIN", "Date"]);
            rows.into_iter()
                .map(|r| (r[0].clone(), r[1].clone()))
                .collect::<Vec<_>>()
        };
        let cap_days = days(&from_cap);
        assert_eq!(cap_days, days(&from_csv));
        let mut vins: Vec<_> = cap_days.iter().map(|d| d.0.clone()).collect();
        vins.dedup();
        assert_eq!(vins, sim_vins);
        for v in &vins {
            let n = cap_days.iter().filter(|d| &d.0 == v).count();
            assert!((1..=3).contains(&n), "{v}: {n} days in a 3-day simulation");
        }
    }
    let h = String::from_utf8_lossy(&bms(&["simulate", "--help"]).stdout).into_owned();
    for needle in ["--gbt32960", "--edition", "login", "logout", "2025"] {
        assert!(h.contains(needle), "simulate --help lacks {needle}: {h}");
    }
    let out = bms(&["simulate", "--gbt32960", "-", "--edition", "2020"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("2016 or 2025"), "{}", stderr(&out));
}

/// `bms predict` reads a capture as it reads frames: the same predictions as on the frames
/// `bms ingest` decodes from it, on standard output and in the stores of `--out`; and a
/// capture with a corrupted packet is scored past it in lenient mode, refused with
/// `--strict`.
#[test]
fn predict_scores_a_capture_like_its_ingested_frames() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("fleet.gbt32960");
    ok(&[
        "simulate",
        "--vehicles",
        "3",
        "--days",
        "20",
        "--seed",
        "11",
        "--cells",
        "8",
        "--probes",
        "2",
        "--interval",
        "600s",
        "--gbt32960",
        p(&cap),
    ]);
    let frames = dir.path().join("frames.csv");
    ok(&["ingest", "-i", p(&cap), "-o", p(&frames)]);
    let model = "models/consistency-ref14x6.onnx";
    let from_cap = ok(&["predict", "-m", model, "-i", p(&cap)]);
    let from_csv = ok(&["predict", "-m", model, "-i", p(&frames)]);
    let text = String::from_utf8(from_cap.stdout.clone()).unwrap();
    assert!(text.lines().count() > 10, "{text}");
    assert_eq!(text, String::from_utf8(from_csv.stdout).unwrap());
    assert!(
        stderr(&from_cap).contains("packets"),
        "{}",
        stderr(&from_cap)
    );

    // The stores hold the same predictions (event ids included).
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(&["predict", "-m", model, "-i", p(&cap), "--out", p(&a)]);
    ok(&["predict", "-m", model, "-i", p(&frames), "--out", p(&b)]);
    let events = |d: &Path| {
        let mut lines: Vec<String> = std::fs::read_to_string(d.join("events.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let ea = events(&a);
    assert!(!ea.is_empty());
    assert_eq!(ea, events(&b));

    // One packet's checksum broken in the middle of the capture.
    let mut bytes = std::fs::read(&cap).unwrap();
    let mid = bytes.len() / 2;
    let at = (mid..bytes.len() - 1)
        .find(|&i| bytes[i] == b'#' && bytes[i + 1] == b'#' && bytes[i + 2] == 0x02)
        .unwrap();
    bytes[at + 30] ^= 0x55;
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, &bytes).unwrap();
    let lenient = ok(&["predict", "-m", model, "-i", p(&bad)]);
    let err = stderr(&lenient);
    assert!(err.contains("checksum 1"), "{err}");
    assert!(!lenient.stdout.is_empty());
    let strict = bms(&["predict", "-m", model, "-i", p(&bad), "--strict"]);
    assert!(!strict.status.success());
    let err = stderr(&strict);
    assert!(err.contains(&format!("byte offset {at}")), "{err}");
}

/// Issue 20: a daily table with 0001-01-01 next to 2024 dates made millions of windows
/// silently (730,706 predictions from a 236-line file); a history beyond 100 years is
/// refused naming the VIN and both dates, by `bms windows` and `bms predict`.
#[test]
fn absurd_date_spans_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daily = dir.path().join("d.csv");
    let header = "VIN,Date,TotalVoltage,TotalCurrent,CellMaxVoltage,CellMinVoltage,MaxTemperature,MinTemperature,Label";
    let mut text = format!("{header}\n");
    for date in ["0001-01-01", "2024-01-01", "2024-01-02"] {
        text.push_str(&format!("V1,{date},370,5,3.9,3.8,25,24,0\n"));
    }
    std::fs::write(&daily, text).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ref14x6.onnx");
    let out = dir.path().join("w.csv");
    let runs: [Vec<&str>; 2] = [
        vec!["windows", "-i", p(&daily), "-o", p(&out)],
        vec!["predict", "-m", p(&model), "-i", p(&daily)],
    ];
    for args in runs {
        let o = bms(&args);
        assert!(!o.status.success(), "{args:?}");
        let e = stderr(&o);
        assert!(
            e.contains("VIN V1") && e.contains("0001-01-01") && e.contains("2024-01-02"),
            "{args:?}: {e}"
        );
    }
    assert!(!out.exists());
}

/// Issue 20: wrong inputs whose every line is rejected now say what the file looks like
/// (a daily table given as batch, Date before VIN, a short line), and a batch file with a
/// header line is refused as such instead of as a daily table with a wrong column.
#[test]
fn a_wrong_file_is_described_not_just_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ref14x6.onnx");
    let daily = d.join("d.csv");
    ok(&[
        "simulate",
        "--vehicles",
        "2",
        "--days",
        "30",
        "--daily",
        p(&daily),
    ]);
    let batch = d.join("w.csv");
    ok(&["windows", "-i", p(&daily), "-o", p(&batch)]);
    let text_of = |f: &Path| std::fs::read_to_string(f).unwrap();
    let swapped: String = text_of(&daily)
        .lines()
        .map(|l| {
            let (a, rest) = l.split_once(',').unwrap();
            let (b, rest) = rest.split_once(',').unwrap();
            format!("{b},{a},{rest}\n")
        })
        .collect();
    std::fs::write(d.join("swapped.csv"), swapped).unwrap();
    let header: Vec<String> = (1..=84).map(|i| format!("f{i}")).collect();
    std::fs::write(
        d.join("headed.csv"),
        format!("VIN,Date,{}\n{}", header.join(","), text_of(&batch)),
    )
    .unwrap();
    let first = text_of(&batch).lines().next().unwrap().to_owned();
    let short: Vec<&str> = first.split(',').take(10).collect();
    std::fs::write(d.join("short.csv"), short.join(",") + "\n").unwrap();
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "d.csv",
            &["--format", "batch"],
            "is the header of a daily table (use --format daily)",
        ),
        ("swapped.csv", &[], "is a header with Date before VIN"),
        (
            "short.csv",
            &[],
            "has 10 fields, where a batch line for this model has 86",
        ),
        ("headed.csv", &[], "third column 'f1' is no daily column"),
    ];
    for (file, extra, want) in cases {
        let input = d.join(file);
        let mut args = vec!["predict", "-m", p(&model), "-i", p(&input)];
        args.extend_from_slice(extra);
        let o = bms(&args);
        assert!(!o.status.success(), "{file}");
        assert!(stderr(&o).contains(want), "{file}: {}", stderr(&o));
    }
}

/// Issue 20: `-o` was a directory on `bms predict` but a file on `daily`/`windows`
/// (`bms predict -o -` made a directory named `-`). Now `-o FILE.csv` is the predictions
/// CSV on every command (`-` is standard output) and the stores take `--out DIR`.
#[test]
fn predict_dash_o_is_a_file_like_everywhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ref14x6.onnx");
    let daily = d.join("d.csv");
    ok(&[
        "simulate",
        "--vehicles",
        "2",
        "--days",
        "30",
        "--daily",
        p(&daily),
    ]);
    let stdout = ok(&["predict", "-m", p(&model), "-i", p(&daily)]).stdout;
    let file = d.join("sub/preds.csv");
    let o = ok(&["predict", "-m", p(&model), "-i", p(&daily), "-o", p(&file)]);
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), stdout);
    let o = ok(&["predict", "-m", p(&model), "-i", p(&daily), "-o", "-"]);
    assert_eq!(o.stdout, stdout);
    assert!(!Path::new("-").exists());
    for (args, want) in [
        (
            vec!["-o", p(&d.join("stores"))],
            "needs a name ending in .csv (the stores go to --out DIR)",
        ),
        (
            vec!["-o", p(&file), "--out", p(&d.join("stores"))],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["predict", "-m", p(&model), "-i", p(&daily)];
        all.extend(args);
        let o = bms(&all);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
    assert!(!d.join("stores").exists());
}
