//! The batch pipeline as a library: sinks, the commit protocol, conservation, failure
//! injection and the observer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use bms_batch::store::parquet::read_predictions;
use bms_batch::store::{SqliteStore, event_id};
use bms_batch::{
    CsvSink, InputFormat, Job, NoObserver, Observer, PredictionSink, ReadCounts, RunEnd,
    ScoredChunk, StoreDir, Summary, score, score_to_dir,
};
use bms_core::model::Model;
use bms_core::{SimConfig, simulate_daily};

fn model() -> Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/consistency-ref14x6.onnx");
    Model::load(&path).unwrap()
}

/// A simulated fleet's daily table as CSV.
fn daily_csv(dir: &Path, vehicles: usize, days: u32) -> PathBuf {
    let sim = simulate_daily(&SimConfig {
        vehicles,
        days,
        seed: 7,
        weak_fraction: 0.3,
        ..SimConfig::default()
    })
    .unwrap();
    let path = dir.join("daily.csv");
    bms_core::io::write_daily_csv(&path, &sim.table, true).unwrap();
    path
}

/// The reference batch CSV of the windows of `daily`, with `bad` lines mixed in.
fn batch_csv(dir: &Path, daily: &Path, bad: &[(usize, &str)]) -> (PathBuf, usize) {
    let table = bms_core::io::read_daily_csv(daily, bms_core::io::ReadMode::Strict)
        .unwrap()
        .data;
    let batch = bms_core::windows(&table, &bms_core::WindowSpec::default()).unwrap();
    let mut text = Vec::new();
    bms_core::io::batch_csv::write_batch_csv_to(&mut text, &batch, false).unwrap();
    let mut lines: Vec<String> = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let good = lines.len();
    for &(at, line) in bad {
        lines.insert(at, line.to_owned());
    }
    let path = dir.join("batch.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, good)
}

/// Every file under `dir` with its bytes (the SQLite file as its rows instead).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.strip_prefix(dir).unwrap().display().to_string();
            let bytes = if name == "results.sqlite" {
                format!("{:?}", SqliteStore::open(&p).unwrap().all().unwrap()).into_bytes()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.insert(name, bytes);
        }
    }
    out
}

#[test]
fn the_stores_hold_the_same_predictions_and_a_rerun_adds_none() {
    let tmp = tempfile::tempdir().unwrap();
    let daily = daily_csv(tmp.path(), 6, 60);
    let model = model();
    let out = tmp.path().join("out");
    let job = Job::default();
    let s = score_to_dir(&daily, &model, &job, &out, &NoObserver).unwrap();
    assert_eq!(s.format, Some(InputFormat::Daily));
    assert!(s.scored > 0 && s.vehicles == 6, "{s:?}");
    assert_eq!(s.rows_rejected, 0);

    let parquet = read_predictions(&out).unwrap();
    let sqlite = SqliteStore::open(&out.join("results.sqlite"))
        .unwrap()
        .all()
        .unwrap();
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    assert_eq!(parquet.rows.len() as u64, s.scored);
    assert_eq!(sqlite.len() as u64, s.scored);
    assert_eq!(events.lines().count() as u64, s.scored);
    let mut ids: Vec<String> = parquet.rows.iter().map(|p| p.event_id.clone()).collect();
    for p in &parquet.rows {
        assert_eq!(p.event_id, event_id(&p.vin, p.date, &s.model_id));
    }
    ids.sort();
    let sqlite_ids: Vec<String> = sqlite.iter().map(|p| p.event_id.clone()).collect();
    assert_eq!(
        ids, sqlite_ids,
        "SQLite rows are keyed by the same event ids"
    );
    assert_eq!(
        s.alarms,
        parquet.rows.iter().filter(|p| p.alarm).count() as u64
    );

    // summary.json reads back as the returned summary (its seconds as of the commit).
    let read = Summary::read(&out.join("summary.json")).unwrap();
    assert_eq!(
        Summary {
            seconds: 0.0,
            ..read
        },
        Summary {
            seconds: 0.0,
            ..s.clone()
        }
    );

    // The same input again: the same stores, byte for byte, and no duplicate rows.
    let before = snapshot(&out);
    let mut before_no_summary = before.clone();
    before_no_summary.remove("summary.json");
    score_to_dir(&daily, &model, &job, &out, &NoObserver).unwrap();
    let mut after = snapshot(&out);
    after.remove("summary.json");
    assert_eq!(after, before_no_summary);
}

#[test]
fn a_failed_run_leaves_the_previous_outputs_and_no_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let daily = daily_csv(tmp.path(), 4, 60);
    let model = model();
    for partition_by_date in [false, true] {
        let out = tmp.path().join(format!("out-{partition_by_date}"));
        let job = Job {
            partition_by_date,
            chunk_lines: 16,
            ..Job::default()
        };
        score_to_dir(&daily, &model, &job, &out, &NoObserver).unwrap();
        let before = snapshot(&out);
        // Another threshold would change every store; the run fails half-way instead.
        let failing = Job {
            threshold: Some(0.01),
            fail_after_rows: Some(40),
            ..job.clone()
        };
        let e = score_to_dir(&daily, &model, &failing, &out, &NoObserver).unwrap_err();
        assert!(e.to_string().contains("injected failure after"), "{e:#}");
        assert_eq!(snapshot(&out), before, "partitioned: {partition_by_date}");
        let names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with('.') || n == bms_batch::sink::LOCK_FILE),
            "temporary files left behind: {names:?}"
        );
    }
}

/// A sink that records what it is given.
#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Recorded>>);

/// What a commit was given: (line, reason) of each reject, their sources, the summary.
type Committed = (Vec<(u64, String)>, Vec<String>, Summary);

#[derive(Default)]
struct Recorded {
    chunks: Vec<usize>,
    rows: Vec<(String, String)>,
    events: usize,
    committed: Option<Committed>,
}

struct RecordingSink {
    rec: Recorder,
    events: bool,
}

impl PredictionSink for RecordingSink {
    fn wants_events(&self) -> bool {
        self.events
    }
    fn write(&mut self, chunk: ScoredChunk) -> Result<()> {
        let mut r = self.rec.0.lock().unwrap();
        r.chunks.push(chunk.predictions.len());
        r.events += chunk
            .events
            .iter()
            .map(|e| e.lines().count())
            .sum::<usize>();
        for p in chunk.predictions.iter() {
            r.rows.push((p.vin.clone(), p.date.to_string()));
        }
        Ok(())
    }
    fn commit(self: Box<Self>, end: &RunEnd) -> Result<()> {
        let mut r = self.rec.0.lock().unwrap();
        assert!(r.committed.is_none(), "committed once");
        r.committed = Some((
            end.rejects
                .iter()
                .map(|r| (r.line, r.reason.clone()))
                .collect(),
            end.sources.to_vec(),
            end.summary.clone(),
        ));
        Ok(())
    }
}

#[test]
fn batch_lines_are_scored_in_order_or_rejected_with_their_text() {
    let tmp = tempfile::tempdir().unwrap();
    let daily = daily_csv(tmp.path(), 3, 50);
    let bad_line = "V-BAD,2024-01-01,1,2,3";
    let (batch, good) = batch_csv(tmp.path(), &daily, &[(0, bad_line), (10, "x,,y")]);
    let model = model();
    let rec = Recorder::default();
    for events in [false, true] {
        *rec.0.lock().unwrap() = Recorded::default();
        let sink = RecordingSink {
            rec: rec.clone(),
            events,
        };
        // Tiny blocks: many chunks, line numbers carried across their borders.
        let job = Job {
            chunk_lines: 7,
            part_bytes: 300,
            ..Job::default()
        };
        let s = score(&batch, &model, &job, Box::new(sink), &NoObserver).unwrap();
        assert_eq!(s.rows_read, good as u64 + 2);
        assert_eq!(s.scored, good as u64);
        assert_eq!(s.rows_rejected, 2);
        let r = rec.0.lock().unwrap();
        assert!(r.chunks.len() > 10, "{:?}", r.chunks);
        assert!(r.chunks.iter().all(|&n| n <= 7));
        assert_eq!(r.events, if events { good } else { 0 });
        // In input order: the batch file's keys, line by line.
        let text = std::fs::read_to_string(&batch).unwrap();
        let want: Vec<(String, String)> = text
            .lines()
            .filter(|l| *l != bad_line && *l != "x,,y")
            .map(|l| {
                let mut f = l.split(',');
                (f.next().unwrap().to_owned(), f.next().unwrap().to_owned())
            })
            .collect();
        assert_eq!(r.rows, want);
        let (rejects, sources, summary) = r.committed.clone().expect("committed");
        assert_eq!(rejects.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 11]);
        assert_eq!(sources, vec![bad_line.to_owned(), "x,,y".to_owned()]);
        assert_eq!(summary.scored, s.scored);
    }

    // Strict: the first bad line stops the run, naming file and line, and nothing commits.
    *rec.0.lock().unwrap() = Recorded::default();
    let job = Job {
        strict: true,
        ..Job::default()
    };
    let sink = RecordingSink {
        rec: rec.clone(),
        events: false,
    };
    let e = score(&batch, &model, &job, Box::new(sink), &NoObserver).unwrap_err();
    assert!(e.to_string().contains("batch.csv, line 1"), "{e:#}");
    assert!(rec.0.lock().unwrap().committed.is_none());
}

#[test]
fn the_csv_sink_quotes_vins_as_the_batch_writer_does() {
    let model = model();
    let tmp = tempfile::tempdir().unwrap();
    // One window whose VIN holds a comma and a quote.
    let values = vec!["0.5"; model.input_width()].join(",");
    let input = tmp.path().join("odd.csv");
    std::fs::write(&input, format!("\"V,1\"\"x\",2024-03-01,{values}\n")).unwrap();
    let mut out = Vec::new();
    let sink = CsvSink::new(&mut out).unwrap();
    let s = score(&input, &model, &Job::default(), Box::new(sink), &NoObserver).unwrap();
    assert_eq!(s.scored, 1, "{s:?}");
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("vin,date,predicted_prob,alarm"));
    let row = lines.next().unwrap();
    assert!(row.starts_with("\"V,1\"\"x\",2024-03-01,"), "{row}");
    let prob: f32 = row.split(',').nth(3).unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&prob));
}

/// An observer that counts what it is told.
#[derive(Default)]
struct Counting {
    total: Mutex<u64>,
    advanced: Mutex<u64>,
    counts: Mutex<Vec<(String, u64, u64, usize)>>,
    finished: Mutex<bool>,
}

impl Observer for Counting {
    fn total(&self, n: u64) {
        *self.total.lock().unwrap() = n;
    }
    fn advance(&self, n: u64) {
        *self.advanced.lock().unwrap() += n;
    }
    fn counts(&self, _input: &Path, c: &ReadCounts<'_>) {
        self.counts
            .lock()
            .unwrap()
            .push((c.what.to_owned(), c.read, c.accepted, c.rejects.len()));
    }
    fn finished(&self) {
        *self.finished.lock().unwrap() = true;
    }
}

#[test]
fn the_observer_sees_all_the_work_and_the_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let daily = daily_csv(tmp.path(), 3, 40);
    let (batch, good) = batch_csv(tmp.path(), &daily, &[(3, "bad")]);
    let model = model();
    let obs = Counting::default();
    let sink = StoreDir::create(&tmp.path().join("o"), &model, &Job::default()).unwrap();
    let s = score(&batch, &model, &Job::default(), Box::new(sink), &obs).unwrap();
    let size = std::fs::metadata(&batch).unwrap().len();
    assert_eq!(
        *obs.total.lock().unwrap(),
        size,
        "batch work is counted in bytes"
    );
    assert_eq!(*obs.advanced.lock().unwrap(), size);
    assert!(*obs.finished.lock().unwrap());
    assert_eq!(
        *obs.counts.lock().unwrap(),
        vec![("lines".to_owned(), good as u64 + 1, good as u64, 1)]
    );
    assert_eq!(s.scored, good as u64);

    let obs = Counting::default();
    let sink = StoreDir::create(&tmp.path().join("d"), &model, &Job::default()).unwrap();
    let s = score(&daily, &model, &Job::default(), Box::new(sink), &obs).unwrap();
    assert_eq!(
        *obs.total.lock().unwrap(),
        s.scored,
        "table work is counted in windows"
    );
    assert_eq!(*obs.advanced.lock().unwrap(), s.scored);
    assert_eq!(obs.counts.lock().unwrap()[0].0, "daily rows");
}

#[test]
fn a_bad_threshold_or_input_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model();
    let out = tmp.path().join("out");
    let job = Job {
        threshold: Some(1.5),
        ..Job::default()
    };
    let daily = daily_csv(tmp.path(), 2, 30);
    let e = score_to_dir(&daily, &model, &job, &out, &NoObserver).unwrap_err();
    assert!(e.to_string().contains("1.5"), "{e:#}");
    let e = score_to_dir(
        &tmp.path().join("missing.csv"),
        &model,
        &Job::default(),
        &out,
        &NoObserver,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("missing.csv"), "{e:#}");
    assert!(
        e.chain()
            .any(|c| c.downcast_ref::<std::io::Error>().map(|io| io.kind())
                == Some(std::io::ErrorKind::NotFound)),
        "the I/O error is kept as the source: {e:?}"
    );
    // Nothing visible was created by either failure.
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn one_run_at_a_time_and_a_dead_runs_temporaries_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let daily = daily_csv(tmp.path(), 2, 30);
    let model = model();
    let out = tmp.path().join("out");
    let first = StoreDir::create(&out, &model, &Job::default()).unwrap();
    let Err(e) = StoreDir::create(&out, &model, &Job::default()) else {
        panic!("a second writer of the same directory was let in");
    };
    assert!(e.to_string().contains("another run is writing"), "{e:#}");
    drop(first);
    // What a killed run leaves: a temporary file and directory, written two minutes ago,
    // and one being written now (by another program's atomic write, say).
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    let stale_file = out.join(".bms-tmp-dead1");
    std::fs::write(&stale_file, b"half a file").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale_file)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let stale_dir = out.join(".bms-tmp-dead2");
    std::fs::create_dir(&stale_dir).unwrap();
    std::fs::File::open(&stale_dir)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let fresh = out.join(".bms-tmp-live");
    std::fs::write(&fresh, b"being written").unwrap();
    let s = score_to_dir(&daily, &model, &Job::default(), &out, &NoObserver).unwrap();
    assert!(s.scored > 0);
    assert!(
        !stale_file.exists() && !stale_dir.exists(),
        "a dead run's temporaries stay"
    );
    assert!(fresh.exists(), "a temporary being written was removed");
}

#[test]
fn a_repeated_frame_is_a_reject_when_lenient_and_an_error_when_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/frames-small.csv");
    let text = std::fs::read_to_string(&example).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let model = model();
    let want = score(
        &example,
        &model,
        &Job::default(),
        Box::new(RecordingSink {
            rec: Recorder::default(),
            events: false,
        }),
        &NoObserver,
    )
    .unwrap();
    // Right after the frame it repeats (read as the file streams by), and at the end
    // (out of time order: the whole file is read and sorted).
    let mut next_to = lines.clone();
    next_to.insert(3, lines[2]);
    let mut at_end = lines.clone();
    at_end.push(lines[2]);
    for (name, content, dup_line) in [
        ("next.csv", next_to, 4),
        ("end.csv", at_end, lines.len() + 1),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, content.join("\n") + "\n").unwrap();
        let rec = Recorder::default();
        let sink = RecordingSink {
            rec: rec.clone(),
            events: false,
        };
        let s = score(&path, &model, &Job::default(), Box::new(sink), &NoObserver).unwrap();
        assert_eq!(s.rows_read, want.rows_read + 1, "{name}");
        assert_eq!(s.rows_rejected, 1, "{name}");
        assert_eq!(
            s.scored, want.scored,
            "{name}: the same windows as without the repeat"
        );
        let (rejects, _, _) = rec.0.lock().unwrap().committed.clone().unwrap();
        assert_eq!(rejects[0].0, dup_line as u64, "{name}");
        assert!(
            rejects[0].1.contains("duplicate frame"),
            "{name}: {:?}",
            rejects[0]
        );
        let strict = Job {
            strict: true,
            ..Job::default()
        };
        let sink = RecordingSink {
            rec: Recorder::default(),
            events: false,
        };
        let e = score(&path, &model, &strict, Box::new(sink), &NoObserver).unwrap_err();
        assert!(
            format!("{e:#}").contains("duplicate frame"),
            "{name}: {e:#}"
        );
    }
}
