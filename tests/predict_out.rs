//! End to end: `bms predict --out DIR` from every input format into the stores
//! (predictions.parquet, events.jsonl, results.sqlite, rejects.csv, summary.json).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bms_batch::store::parquet::read_predictions;
use bms_batch::store::{Prediction, SqliteStore, event_id};
use common::{bms, ok, p, stderr, text};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ref_model() -> PathBuf {
    root().join("models/consistency-ref14x6.onnx")
}

fn ext_model() -> PathBuf {
    root().join("models/consistency-ext.onnx")
}

/// A small simulated fleet: daily CSV and Parquet, and the batch CSV cut from it.
struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ok(&[
            "simulate",
            "--vehicles",
            "6",
            "--days",
            "40",
            "--seed",
            "3",
            "--weak-fraction",
            "0.5",
            "--daily",
            p(&d.join("daily.csv")),
        ]);
        let table = bms_core::io::read_daily_csv(&d.join("daily.csv"), Default::default())
            .unwrap()
            .data;
        bms_core::io::write_daily_parquet(&d.join("daily.parquet"), &table).unwrap();
        ok(&[
            "windows",
            "-i",
            p(&d.join("daily.csv")),
            "-o",
            p(&d.join("batch.csv")),
        ]);
        Fleet { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn predict(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["predict", "-m", p(model), "-i", p(input), "--out", p(out)];
    args.extend_from_slice(extra);
    ok(&args)
}

fn by_id(rows: Vec<Prediction>) -> BTreeMap<String, Prediction> {
    rows.into_iter().map(|r| (r.event_id.clone(), r)).collect()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&text(&dir.join("summary.json"))).unwrap()
}

fn events(dir: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text(&dir.join("events.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_input_format_gives_the_same_predictions() {
    let f = Fleet::new();
    let runs: Vec<(&str, PathBuf, &str)> = vec![
        ("batch", f.path("batch.csv"), "batch"),
        ("daily-csv", f.path("daily.csv"), "daily"),
        ("daily-parquet", f.path("daily.parquet"), "daily"),
    ];
    let mut results = Vec::new();
    for (name, input, format) in &runs {
        let out = f.path(&format!("out-{name}"));
        let o = predict(&ref_model(), input, &out, &[]);
        let s = summary(&out);
        assert_eq!(s["format"], *format, "{name}: detected format");
        assert!(stderr(&o).contains("scored"), "{}", stderr(&o));
        results.push(by_id(read_predictions(&out).unwrap().rows));
    }
    assert!(!results[0].is_empty());
    // One prediction per line of the batch file.
    assert_eq!(results[0].len(), text(&f.path("batch.csv")).lines().count());
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
    // An explicit --format agrees with detection.
    let out = f.path("out-explicit");
    predict(
        &ref_model(),
        &f.path("daily.csv"),
        &out,
        &["--format", "daily"],
    );
    assert_eq!(by_id(read_predictions(&out).unwrap().rows), results[0]);
    // A wrong explicit --format: a_byte_order_mark_changes_nothing_and_a_run_that_rejects_everything_fails.
}

#[test]
fn frames_csv_and_parquet_score_like_their_daily_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let frames_csv = root().join("examples/data/frames-small.csv");
    let frames = bms_core::io::read_frame_csv(&frames_csv, Default::default())
        .unwrap()
        .data;
    bms_core::io::write_frames_parquet(&d.join("frames.parquet"), &frames).unwrap();
    ok(&["daily", "-i", p(&frames_csv), "-o", p(&d.join("daily.csv"))]);
    let mut all = Vec::new();
    for (name, input) in [
        ("fc", frames_csv.clone()),
        ("fp", d.join("frames.parquet")),
        ("dc", d.join("daily.csv")),
    ] {
        let out = d.join(name);
        predict(&ref_model(), &input, &out, &[]);
        all.push((summary(&out), by_id(read_predictions(&out).unwrap().rows)));
    }
    assert_eq!(all[0].0["format"], "frames");
    assert_eq!(all[1].0["format"], "frames");
    assert_eq!(all[0].0["rows_read"], 1116);
    assert_eq!(all[1].0["rows_read"], 1116);
    assert!(!all[0].1.is_empty());
    assert_eq!(all[0].1, all[2].1);
    assert_eq!(all[1].1, all[2].1);
}

#[test]
fn parquet_jsonl_and_sqlite_hold_the_same_predictions_with_reference_field_names() {
    let f = Fleet::new();
    let out = f.path("out");
    predict(&ref_model(), &f.path("batch.csv"), &out, &[]);
    let pq = by_id(read_predictions(&out).unwrap().rows);
    let db = by_id(
        SqliteStore::open(&out.join("results.sqlite"))
            .unwrap()
            .all()
            .unwrap(),
    );
    assert_eq!(pq, db);
    let ev = events(&out);
    assert_eq!(ev.len(), pq.len());

    // Field names and order: request_id, vin, date, predicted_prob, then day-major
    // features with suffix 14 the oldest day and 1 the newest (AWS.md §1).
    let cols = [
        "total_voltage",
        "total_current",
        "cell_max_voltage",
        "cell_min_voltage",
        "max_temperature",
        "min_temperature",
    ];
    let mut expected = vec!["request_id", "vin", "date", "predicted_prob"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for suffix in (1..=14).rev() {
        for c in cols {
            expected.push(format!("{c}_{suffix}"));
        }
    }
    // The batch file's lines, to check which day each suffix holds.
    let batch: BTreeMap<(String, String), Vec<f32>> = text(&f.path("batch.csv"))
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            (
                (v[0].to_owned(), v[1].to_owned()),
                v[2..].iter().map(|x| x.parse().unwrap()).collect(),
            )
        })
        .collect();
    let line = text(&out.join("events.jsonl"));
    let first = line.lines().next().unwrap();
    assert!(first.starts_with("{\"request_id\":\""), "{first}");
    assert!(
        !first.contains(": ") && !first.contains(", "),
        "compact separators"
    );
    for e in &ev {
        let keys: Vec<&String> = e.keys().collect();
        // serde_json's map is sorted unless preserve_order: compare as sets and check the
        // textual order separately below.
        assert_eq!(keys.len(), expected.len());
        for k in &expected {
            assert!(e.contains_key(k), "missing {k}");
        }
        let id = e["request_id"].as_str().unwrap();
        let row = &pq[id];
        assert_eq!(e["vin"], row.vin.as_str());
        assert_eq!(e["date"], row.date.to_string());
        assert_eq!(
            e["predicted_prob"].as_f64().unwrap() as f32,
            row.predicted_prob
        );
        assert_eq!(
            id,
            event_id(&row.vin, row.date, "consistency-ref14x6-v1"),
            "deterministic id"
        );
        let x = &batch[&(row.vin.clone(), row.date.to_string())];
        assert_eq!(e["total_voltage_14"].as_f64().unwrap() as f32, x[0]);
        assert_eq!(e["min_temperature_1"].as_f64().unwrap() as f32, x[83]);
        assert_eq!(e["cell_max_voltage_13"].as_f64().unwrap() as f32, x[6 + 2]);
        assert_eq!(&row.features, x);
    }
    // Textual order of the keys in the first line.
    let mut at = 0;
    for k in &expected {
        let pos = first[at..]
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} out of order"));
        at += pos + 1;
    }
}

#[test]
fn rerun_is_idempotent_and_a_second_model_adds_rows() {
    let f = Fleet::new();
    let out = f.path("out");
    predict(&ref_model(), &f.path("daily.csv"), &out, &[]);
    let db = || {
        SqliteStore::open(&out.join("results.sqlite"))
            .unwrap()
            .all()
            .unwrap()
    };
    let first = db();
    let events1 = text(&out.join("events.jsonl"));
    let pq1 = std::fs::read(out.join("predictions.parquet")).unwrap();
    predict(&ref_model(), &f.path("daily.csv"), &out, &[]);
    assert_eq!(db(), first, "same rows, same content");
    assert_eq!(text(&out.join("events.jsonl")), events1);
    assert_eq!(std::fs::read(out.join("predictions.parquet")).unwrap(), pq1);
    // The batch file is the same windows: still no new rows.
    predict(&ref_model(), &f.path("batch.csv"), &out, &[]);
    assert_eq!(db(), first);

    predict(&ext_model(), &f.path("daily.csv"), &out, &[]);
    let both = db();
    assert_eq!(both.len(), 2 * first.len());
    let ext: Vec<&Prediction> = both
        .iter()
        .filter(|r| r.model_id == "consistency-ext-v1")
        .collect();
    assert_eq!(ext.len(), first.len());
    assert_eq!(ext[0].features.len(), 14 * 10);
    // The reference rows are untouched.
    let refs: Vec<Prediction> = both
        .into_iter()
        .filter(|r| r.model_id == "consistency-ref14x6-v1")
        .collect();
    assert_eq!(by_id(refs), by_id(first));
    // Events of the ext model name its extended features.
    let e = events(&out);
    assert!(e[0].contains_key("spread_mean_14") && e[0].contains_key("soc_deviation_mean_1"));
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = if p.is_file() && name != "results.sqlite" {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            (name, bytes)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn an_interrupted_run_leaves_the_previous_outputs() {
    let f = Fleet::new();
    let out = f.path("out");
    // A first, complete run on half of the lines.
    let all = text(&f.path("batch.csv"));
    let half: String = all.lines().take(60).map(|l| format!("{l}\n")).collect();
    std::fs::write(f.path("half.csv"), half).unwrap();
    predict(&ref_model(), &f.path("half.csv"), &out, &[]);
    let before = listing(&out);
    let rows_before = SqliteStore::open(&out.join("results.sqlite"))
        .unwrap()
        .all()
        .unwrap();
    assert_eq!(rows_before.len(), 60);

    // The second run dies after its store writer has written part of the outputs.
    for partition in [false, true] {
        let mut args = vec![
            "predict".to_owned(),
            "-m".into(),
            p(&ref_model()).into(),
            "-i".into(),
            p(&f.path("batch.csv")).into(),
            "--out".into(),
            p(&out).into(),
        ];
        if partition {
            args.extend(["--partition-by".into(), "date".into()]);
        }
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_bms"))
            .args(&args)
            .env("BMS_TEST_FAIL_AFTER_ROWS", "10")
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(stderr(&o).contains("injected failure"), "{}", stderr(&o));
        assert_eq!(listing(&out), before, "no file changed, no temporary left");
        let rows = SqliteStore::open(&out.join("results.sqlite"))
            .unwrap()
            .all()
            .unwrap();
        assert_eq!(rows, rows_before, "the SQLite transaction was rolled back");
    }
}

#[test]
fn malformed_lines_end_in_rejects_with_reasons() {
    let f = Fleet::new();
    let good: Vec<String> = text(&f.path("batch.csv"))
        .lines()
        .take(5)
        .map(String::from)
        .collect();
    let mut lines = good.clone();
    let mut bad_number: Vec<&str> = good[0].split(',').collect();
    bad_number[10] = "abc";
    let mut bad_date: Vec<&str> = good[1].split(',').collect();
    bad_date[1] = "2024-13-01";
    let mut no_vin: Vec<&str> = good[2].split(',').collect();
    no_vin[0] = "";
    lines.insert(2, bad_number.join(","));
    lines.insert(4, "VIN1,2024-01-01,1.0,2.0".into());
    lines.push(bad_date.join(","));
    lines.push(String::new()); // blank: skipped, not counted
    lines.push(no_vin.join(","));
    std::fs::write(f.path("bad.csv"), lines.join("\n") + "\n").unwrap();
    let out = f.path("out");
    let o = predict(&ref_model(), &f.path("bad.csv"), &out, &[]);
    let s = summary(&out);
    assert_eq!(s["rows_read"], 9);
    assert_eq!(s["scored"], 5);
    assert_eq!(s["rows_rejected"], 4);
    assert!(
        stderr(&o).contains("read 9 lines, accepted 5, rejected 4"),
        "{}",
        stderr(&o)
    );
    let rejects = text(&out.join("rejects.csv"));
    let r: Vec<&str> = rejects.lines().collect();
    assert_eq!(r[0], "line,reason,source");
    assert_eq!(r.len(), 5);
    assert!(
        r[1].starts_with("3,") && r[1].contains("'abc' is not a number"),
        "{}",
        r[1]
    );
    assert!(r[1].contains("abc") && r[1].ends_with(&format!("\"{}\"", bad_number.join(","))));
    assert!(
        r[2].starts_with("5,") && r[2].contains("expected 86 fields"),
        "{}",
        r[2]
    );
    assert!(
        r[3].starts_with("8,") && r[3].contains("2024-13-01"),
        "{}",
        r[3]
    );
    assert!(
        r[4].starts_with("10,") && r[4].contains("empty VIN"),
        "{}",
        r[4]
    );

    // --strict stops at the first bad line, names it, and writes nothing.
    let strict = f.path("strict");
    let o = bms(&[
        "predict",
        "-m",
        p(&ref_model()),
        "-i",
        p(&f.path("bad.csv")),
        "--out",
        p(&strict),
        "--strict",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
    assert!(!strict.join("predictions.parquet").exists());
}

#[test]
fn partition_by_date_writes_a_hive_layout_with_the_same_rows() {
    let f = Fleet::new();
    let single = f.path("single");
    let parted = f.path("parted");
    predict(&ref_model(), &f.path("batch.csv"), &single, &[]);
    predict(
        &ref_model(),
        &f.path("batch.csv"),
        &parted,
        &["--partition-by", "date"],
    );
    let a = by_id(read_predictions(&single).unwrap().rows);
    let b = by_id(read_predictions(&parted).unwrap().rows);
    assert_eq!(a, b);
    let dates: std::collections::BTreeSet<String> =
        a.values().map(|r| r.date.to_string()).collect();
    let dirs: std::collections::BTreeSet<String> = std::fs::read_dir(parted.join("predictions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        dirs,
        dates.iter().map(|d| format!("date={d}")).collect(),
        "one date=YYYY-MM-DD directory per date"
    );
    assert!(!parted.join("predictions.parquet").exists());
    // Files inside a partition carry no date column (it lives in the path).
    let d = dates.iter().next().unwrap();
    let file =
        std::fs::File::open(parted.join(format!("predictions/date={d}/part-0.parquet"))).unwrap();
    let meta =
        parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&file, Default::default()).unwrap();
    assert!(meta.schema().index_of("date").is_err());
    assert!(meta.schema().index_of("predicted_prob").is_ok());
    // Switching back to one file removes the directory layout.
    predict(&ref_model(), &f.path("batch.csv"), &parted, &[]);
    assert!(parted.join("predictions.parquet").is_file());
    assert!(!parted.join("predictions").exists());
}

/// `bms predict --out` with a chunk size forced through the hidden test hook.
fn predict_chunked(input: &Path, out: &Path, chunk: usize) -> std::process::Output {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bms"))
        .args([
            "predict",
            "-m",
            p(&ref_model()),
            "-i",
            p(input),
            "--out",
            p(out),
        ])
        .env("BMS_TEST_CHUNK_LINES", chunk.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

#[test]
fn small_chunks_give_the_same_answers_and_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let frames_csv = root().join("examples/data/frames-small.csv");
    predict(&ref_model(), &frames_csv, &d.join("whole"), &[]);
    let whole = by_id(read_predictions(&d.join("whole")).unwrap().rows);
    assert!(!whole.is_empty());
    // Frames streamed 100 lines at a time (chunk borders inside days and vehicles).
    let o = predict_chunked(&frames_csv, &d.join("chunked"), 100);
    assert!(!stderr(&o).contains("not in time order"), "{}", stderr(&o));
    assert_eq!(
        by_id(read_predictions(&d.join("chunked")).unwrap().rows),
        whole
    );
    assert_eq!(summary(&d.join("chunked"))["rows_read"], 1116);
    // Frames out of time order fall back to reading and sorting the whole file.
    let t = text(&frames_csv);
    let mut lines: Vec<&str> = t.lines().collect();
    let header = lines.remove(0);
    lines.reverse();
    let shuffled = d.join("reversed.csv");
    std::fs::write(&shuffled, format!("{header}\n{}\n", lines.join("\n"))).unwrap();
    let o = predict_chunked(&shuffled, &d.join("reversed"), 100);
    assert!(stderr(&o).contains("not in time order"), "{}", stderr(&o));
    assert_eq!(
        by_id(read_predictions(&d.join("reversed")).unwrap().rows),
        whole
    );

    // Batch lines 7 at a time: same predictions, rejects keep their file line numbers.
    let f = Fleet::new();
    let mut batch: Vec<String> = text(&f.path("batch.csv"))
        .lines()
        .map(String::from)
        .collect();
    batch.insert(9, "BAD,2024-01-01,1".into()); // line 10
    batch.insert(20, "BAD2,2024-01-01,1".into()); // line 21
    std::fs::write(f.path("b.csv"), batch.join("\n") + "\n").unwrap();
    predict(&ref_model(), &f.path("b.csv"), &f.path("one"), &[]);
    predict_chunked(&f.path("b.csv"), &f.path("seven"), 7);
    assert_eq!(
        by_id(read_predictions(&f.path("seven")).unwrap().rows),
        by_id(read_predictions(&f.path("one")).unwrap().rows)
    );
    let rejects = text(&f.path("seven").join("rejects.csv"));
    let r: Vec<&str> = rejects.lines().collect();
    assert_eq!(r.len(), 3, "{rejects}");
    assert!(
        r[1].starts_with("10,") && r[1].ends_with(",BAD,2024-01-01,1")
            || r[1].contains("\"BAD,2024-01-01,1\""),
        "{}",
        r[1]
    );
    assert!(r[2].starts_with("21,"), "{}", r[2]);
    assert_eq!(rejects, text(&f.path("one").join("rejects.csv")));
}

#[test]
fn labelled_windows_are_scored_and_evaluated() {
    let f = Fleet::new();
    let labelled = f.path("labelled.csv");
    ok(&[
        "windows",
        "-i",
        p(&f.path("daily.csv")),
        "-o",
        p(&labelled),
        "--labels",
    ]);
    let out = f.path("out-labelled");
    let o = ok(&[
        "predict",
        "-m",
        p(&ref_model()),
        "-i",
        p(&labelled),
        "--out",
        p(&out),
        "--threshold",
        "0.2",
    ]);
    assert!(stderr(&o).contains("ROC AUC"), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_str(&text(&out.join("summary.json"))).unwrap();
    let lines = text(&labelled).lines().count() as u64;
    assert_eq!(summary["scored"], lines);
    assert_eq!(summary["rows_rejected"], 0);
    let e = &summary["evaluation"];
    assert_eq!(e["labelled"], lines);

    // The same figures computed here, pairwise, from the labels in the file and the
    // probabilities in the store.
    let probs: BTreeMap<(String, chrono::NaiveDate), f32> = read_predictions(&out)
        .unwrap()
        .rows
        .into_iter()
        .map(|r| ((r.vin, r.date), r.predicted_prob))
        .collect();
    let pairs: Vec<(f32, bool)> = text(&labelled)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let key = (f[0].to_owned(), f[1].parse().unwrap());
            (probs[&key], *f.last().unwrap() == "1.0")
        })
        .collect();
    let pos: Vec<f32> = pairs.iter().filter(|p| p.1).map(|p| p.0).collect();
    let neg: Vec<f32> = pairs.iter().filter(|p| !p.1).map(|p| p.0).collect();
    assert!(!pos.is_empty() && !neg.is_empty(), "both classes occur");
    let mut wins = 0.0;
    for &a in &pos {
        for &b in &neg {
            wins += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = wins / (pos.len() * neg.len()) as f64;
    assert!((e["roc_auc"].as_f64().unwrap() - auc).abs() < 1e-12);
    assert_eq!(e["positives"], pos.len() as u64);
    let alarms = pairs.iter().filter(|p| p.0 >= 0.2).count();
    let hits = pairs.iter().filter(|p| p.0 >= 0.2 && p.1).count();
    if alarms > 0 {
        assert!((e["precision"].as_f64().unwrap() - hits as f64 / alarms as f64).abs() < 1e-12);
    }
    assert!((e["recall"].as_f64().unwrap() - hits as f64 / pos.len() as f64).abs() < 1e-12);

    // Unlabelled input: no evaluation in the summary.
    let plain = f.path("out-plain");
    ok(&[
        "predict",
        "-m",
        p(&ref_model()),
        "-i",
        p(&f.path("batch.csv")),
        "--out",
        p(&plain),
    ]);
    assert!(!text(&plain.join("summary.json")).contains("evaluation"));
}

#[test]
fn a_byte_order_mark_changes_nothing_and_a_run_that_rejects_everything_fails() {
    let f = Fleet::new();
    for name in ["daily.csv", "batch.csv"] {
        let plain = f.path(&format!("out-plain-{name}"));
        ok(&[
            "predict",
            "-m",
            p(&ref_model()),
            "-i",
            p(&f.path(name)),
            "--out",
            p(&plain),
        ]);
        let bom_input = f.path(&format!("bom-{name}"));
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend(std::fs::read(f.path(name)).unwrap());
        std::fs::write(&bom_input, bytes).unwrap();
        let bom = f.path(&format!("out-bom-{name}"));
        ok(&[
            "predict",
            "-m",
            p(&ref_model()),
            "-i",
            p(&bom_input),
            "--out",
            p(&bom),
        ]);
        assert_eq!(
            text(&bom.join("events.jsonl")),
            text(&plain.join("events.jsonl")),
            "{name}: the same predictions, the same VINs and event ids"
        );
    }
    // A daily table read as batch lines: every line rejected, and the run says so.
    let out = f.path("out-wrong");
    let o = bms(&[
        "predict",
        "-m",
        p(&ref_model()),
        "-i",
        p(&f.path("daily.csv")),
        "--format",
        "batch",
        "--out",
        p(&out),
    ]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("every one of its") && stderr(&o).contains("rejects.csv"),
        "{}",
        stderr(&o)
    );
    // Every line rejected with a reason instead of guessing, and the stores say so too.
    let s = summary(&out);
    assert_eq!(s["scored"], 0);
    assert_eq!(s["rows_rejected"], s["rows_read"]);
    assert!(text(&out.join("rejects.csv")).lines().count() > 1);
}

/// SPEC §7: a model that does not handle missing values (here a logistic regression)
/// gets no row with a NaN feature: such a line is a reject naming its line and column,
/// not the number the engine's kernels made of it; a tree model scores the same lines.
#[test]
fn rows_with_missing_values_are_rejected_for_models_that_do_not_handle_them() {
    let f = Fleet::new();
    let mut lines: Vec<String> = text(&f.path("batch.csv"))
        .lines()
        .take(5)
        .map(String::from)
        .collect();
    for (i, col) in [(1, 7), (3, 85)] {
        let mut fields: Vec<&str> = lines[i].split(',').collect();
        fields[col] = "nan";
        lines[i] = fields.join(",");
    }
    std::fs::write(f.path("nan.csv"), lines.join("\n") + "\n").unwrap();
    let logreg = root().join("models/fixtures/logreg_n.onnx");
    let out = f.path("out-logreg");
    let o = predict(&logreg, &f.path("nan.csv"), &out, &[]);
    assert!(
        stderr(&o).contains("read 5 lines, accepted 3, rejected 2"),
        "{}",
        stderr(&o)
    );
    let s = summary(&out);
    assert_eq!(
        (s["scored"].as_u64(), s["rows_rejected"].as_u64()),
        (Some(3), Some(2))
    );
    let rejects = text(&out.join("rejects.csv"));
    let r: Vec<&str> = rejects.lines().collect();
    assert_eq!(r.len(), 3, "{rejects}");
    for (line, (n, col)) in r[1..].iter().zip([(2, 8), (4, 86)]) {
        assert!(
            line.starts_with(&format!("{n},\"column {col}: a missing value"))
                && line.contains("MatMul"),
            "{line}"
        );
    }
    let o = bms(&[
        "predict",
        "-m",
        p(&logreg),
        "-i",
        p(&f.path("nan.csv")),
        "--strict",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("line 2") && stderr(&o).contains("column 8"),
        "{}",
        stderr(&o)
    );
    let out = f.path("out-tree");
    predict(&ref_model(), &f.path("nan.csv"), &out, &[]);
    assert_eq!(summary(&out)["scored"], 5);
}

/// SPEC §6: a batch file with the same (VIN, Date) twice (conflicting features) was
/// scored twice into Parquet and events but once into SQLite. Now the first line is
/// scored, the later one is a reject naming the first, and every store agrees.
#[test]
fn conflicting_duplicate_windows_score_the_first_line_in_every_store() {
    let f = Fleet::new();
    let mut lines: Vec<String> = text(&f.path("batch.csv"))
        .lines()
        .take(6)
        .map(String::from)
        .collect();
    let mut twin: Vec<&str> = lines[1].split(',').collect();
    twin[20] = "123.5";
    let twin = twin.join(",");
    lines.insert(4, twin);
    std::fs::write(f.path("dup.csv"), lines.join("\n") + "\n").unwrap();
    let out = f.path("out");
    let o = predict(&ref_model(), &f.path("dup.csv"), &out, &[]);
    assert!(
        stderr(&o).contains("read 7 lines, accepted 6, rejected 1"),
        "{}",
        stderr(&o)
    );
    let rejects = text(&out.join("rejects.csv"));
    let r: Vec<&str> = rejects.lines().collect();
    assert_eq!(r.len(), 2, "{rejects}");
    assert!(
        r[1].starts_with("5,the same VIN and Date as line 2"),
        "{}",
        r[1]
    );
    let parquet = read_predictions(&out).unwrap().rows;
    let sqlite = SqliteStore::open(&out.join("results.sqlite"))
        .unwrap()
        .all()
        .unwrap();
    let ev = events(&out);
    assert_eq!((parquet.len(), sqlite.len(), ev.len()), (6, 6, 6));
    // The first line's features, not the twin's, in every store.
    let first = by_id(parquet);
    let want: f32 = lines[1].split(',').nth(20).unwrap().parse().unwrap();
    let id = event_id(
        lines[1].split(',').next().unwrap(),
        chrono::NaiveDate::parse_from_str(lines[1].split(',').nth(1).unwrap(), "%Y-%m-%d").unwrap(),
        &first.values().next().unwrap().model_id,
    );
    assert_eq!(first[&id].features[18], want);
    // The twin in another chunk than its first line: the same outcome.
    let chunked = f.path("out-chunked");
    predict_chunked(&f.path("dup.csv"), &chunked, 2);
    assert_eq!(text(&chunked.join("rejects.csv")), rejects);
    assert_eq!(summary(&chunked)["scored"], 6);
    let o = bms(&[
        "predict",
        "-m",
        p(&ref_model()),
        "-i",
        p(&f.path("dup.csv")),
        "--strict",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("lines 2 and 5"), "{}", stderr(&o));
}

/// Issue 20: `bms predict` with a regressor alarmed on every row (its output, e.g. 5968,
/// was read as a probability); it is refused at load, naming the output and the fix.
#[test]
fn a_regressor_is_refused_before_anything_is_written() {
    let f = Fleet::new();
    let out = f.path("out");
    let o = bms(&[
        "predict",
        "-m",
        p(&root().join("models/fixtures/xgb_regressor.onnx")),
        "-i",
        p(&f.path("batch.csv")),
        "--out",
        p(&out),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("output `variable` is not a probability")
            && stderr(&o).contains("bms.output = probability"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "nothing written");
}

/// The state of a store directory that matters: events, rejects and summary counts as
/// written, the Parquet predictions and the SQLite rows by event id.
#[derive(Debug, PartialEq)]
struct Stores {
    events: String,
    rejects: String,
    counts: (u64, u64),
    parquet: BTreeMap<String, Prediction>,
    sqlite: BTreeMap<String, Prediction>,
}

fn stores(dir: &Path) -> Stores {
    let s = summary(dir);
    let sqlite = SqliteStore::open(&dir.join("results.sqlite"))
        .unwrap()
        .all()
        .unwrap();
    let n = sqlite.len();
    let sqlite = by_id(sqlite);
    assert_eq!(sqlite.len(), n, "no event id twice in results.sqlite");
    Stores {
        events: text(&dir.join("events.jsonl")),
        rejects: text(&dir.join("rejects.csv")),
        counts: (
            s["rows_read"].as_u64().unwrap(),
            s["scored"].as_u64().unwrap(),
        ),
        parquet: by_id(read_predictions(dir).unwrap().rows),
        sqlite,
    }
}

/// Issue 20 §3: `bms predict --out DIR` killed with SIGKILL at many points of a run over
/// an earlier run's outputs. After every kill each file of DIR is whole and either the
/// earlier run's or the new one's (never half written), results.sqlite has each event
/// once and between the two runs' rows, nothing but the lock and the stores is left
/// behind a rerun, and the rerun completes to exactly the new run's outputs.
#[test]
fn sigkill_at_any_point_leaves_whole_files_and_a_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&[
        "simulate",
        "--vehicles",
        "60",
        "--days",
        "300",
        "--seed",
        "9",
        "--daily",
        p(&d.join("daily.csv")),
    ]);
    ok(&[
        "windows",
        "-i",
        p(&d.join("daily.csv")),
        "-o",
        p(&d.join("new.csv")),
    ]);
    let all = text(&d.join("new.csv"));
    let lines: Vec<&str> = all.lines().collect();
    let old_text: String = lines[..lines.len() * 3 / 5]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.join("old.csv"), old_text).unwrap();
    let run = |input: &str, out: &Path| {
        let t = std::time::Instant::now();
        predict_chunked(&d.join(input), out, 500);
        t.elapsed()
    };
    let (ref_old, ref_new) = (d.join("ref-old"), d.join("ref-new"));
    run("old.csv", &ref_old);
    let took = run("new.csv", &ref_new);
    let (old, new) = (stores(&ref_old), stores(&ref_new));
    assert_ne!(old.events, new.events);

    let out = d.join("out");
    run("old.csv", &out);
    let kills = 12;
    for k in 0..kills {
        let delay = took.mul_f64(k as f64 / (kills - 2) as f64);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bms"))
            .args([
                "predict",
                "-m",
                p(&ref_model()),
                "-i",
                p(&d.join("new.csv")),
                "--out",
                p(&out),
            ])
            .env("BMS_TEST_CHUNK_LINES", "500")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        let now = stores(&out);
        for (what, got, a, b) in [
            ("events.jsonl", &now.events, &old.events, &new.events),
            ("rejects.csv", &now.rejects, &old.rejects, &new.rejects),
        ] {
            assert!(
                got == a || got == b,
                "kill {k} after {delay:?}: {what} is neither run's"
            );
        }
        assert!(
            now.counts == old.counts || now.counts == new.counts,
            "kill {k}: summary"
        );
        assert!(
            now.parquet == old.parquet || now.parquet == new.parquet,
            "kill {k}: parquet"
        );
        // SQLite accumulates: the old run's rows, and maybe the new run's on top.
        assert!(
            now.sqlite == old.sqlite || now.sqlite == new.sqlite,
            "kill {k}: sqlite"
        );
    }
    run("new.csv", &out);
    assert_eq!(stores(&out), new);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".bms-lock",
            "events.jsonl",
            "predictions.parquet",
            "rejects.csv",
            "results.sqlite",
            "summary.json"
        ],
        "temporaries of killed runs are gone after the rerun"
    );
}

/// Issue 20 §3: a disk that fills during `bms predict --out` (a small tmpfs): the run
/// fails naming the file it could not write and "No space left", the directory still
/// holds the previous run's complete outputs, and no temporary is left behind.
#[test]
fn a_full_disk_fails_the_run_and_keeps_the_previous_outputs() {
    let f = Fleet::new();
    let fs = common::Tmpfs::mount("3m");
    let out = fs.dir.path().join("out");
    predict_chunked(&f.path("batch.csv"), &out, 500);
    let before = stores(&out);
    // Ten times the fleet: more than the room left.
    let big = f.path("big.csv");
    let lines = text(&f.path("batch.csv"));
    let mut text_big = String::new();
    for copy in 0..10 {
        for l in lines.lines() {
            text_big.push_str(&format!("COPY{copy}{l}\n"));
        }
    }
    std::fs::write(&big, text_big).unwrap();
    let o = bms(&[
        "predict",
        "-m",
        p(&ref_model()),
        "-i",
        p(&big),
        "--out",
        p(&out),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(p(&out)) && e.contains("No space left on device"),
        "{e}"
    );
    let after = stores(&out);
    assert!(after.events == before.events, "events.jsonl changed");
    assert!(after.rejects == before.rejects, "rejects.csv changed");
    assert_eq!(after.counts, before.counts, "summary.json changed");
    assert!(
        after.parquet == before.parquet,
        "predictions.parquet changed"
    );
    assert!(
        after.sqlite == before.sqlite,
        "results.sqlite changed: {} rows, was {}",
        after.sqlite.len(),
        before.sqlite.len()
    );
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(".bms-tmp")
                || n.starts_with(".bms-old")
                || n.ends_with("-journal")
                || n.ends_with("-wal")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
