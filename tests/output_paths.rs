//! End to end: an output path whose target exists and is not a regular file (a device, a
//! FIFO, a symlink, a directory) is refused before anything is written, and left as it
//! was (SPEC §4); the files of `bms predict --out DIR` likewise, while `DIR` itself may be
//! a symlink to a directory.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ok, p, stderr, text};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn frames() -> PathBuf {
    root().join("examples/data/frames-small.csv")
}

fn model() -> PathBuf {
    root().join("models/consistency-ref14x6.onnx")
}

/// Runs `bms` with `args`, killing it (and failing the test) if it has not ended within
/// a minute: a FIFO opened for writing without a reader blocks forever.
fn bms_timed(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bms"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bms");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for bms").is_some() {
            return child.wait_with_output().expect("bms output");
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("bms output");
            panic!(
                "bms {args:?} hung (killed after 60 s): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `bms` and expects it to fail with a message naming `path` and containing `what`.
fn refused(args: &[&str], path: &Path, what: &str) -> String {
    let out = bms_timed(args);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "bms {args:?} succeeded; stderr: {err}"
    );
    assert!(
        err.contains(&format!("{}: {what}", path.display())),
        "bms {args:?}: the message should name {} and say it {what}: {err}",
        path.display()
    );
    err
}

/// `mknod PATH c 1 3`: a character device like /dev/null (tests run as root).
fn char_device(path: &Path) {
    let st = Command::new("mknod")
        .args([p(path), "c", "1", "3"])
        .status()
        .expect("run mknod");
    assert!(st.success(), "mknod {} failed (not root?)", path.display());
    assert!(is_char_device(path));
}

fn is_char_device(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

fn fifo(path: &Path) {
    let st = Command::new("mkfifo")
        .arg(p(path))
        .status()
        .expect("run mkfifo");
    assert!(st.success(), "mkfifo {} failed", path.display());
}

fn is_fifo(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// `link` is still a symlink to `target`.
fn still_links(link: &Path, target: &Path) {
    let m = std::fs::symlink_metadata(link).unwrap();
    assert!(
        m.file_type().is_symlink(),
        "{} was replaced",
        link.display()
    );
    assert_eq!(std::fs::read_link(link).unwrap(), target);
}

/// A daily CSV made from the example frames, in `dir`.
fn daily_csv(dir: &Path) -> PathBuf {
    let daily = dir.join("daily.csv");
    ok(&["daily", "-i", p(&frames()), "-o", p(&daily)]);
    daily
}

/// A batch CSV made from a small simulated fleet, in `dir`.
fn batch_csv(dir: &Path) -> PathBuf {
    let daily = dir.join("sim-daily.csv");
    ok(&[
        "simulate",
        "--vehicles",
        "2",
        "--days",
        "30",
        "--daily",
        p(&daily),
    ]);
    let batch = dir.join("w.csv");
    ok(&["windows", "-i", p(&daily), "-o", p(&batch)]);
    batch
}

#[test]
fn a_character_device_given_to_daily_or_windows_is_refused_and_stays_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("null");
    char_device(&dev);
    refused(
        &["daily", "-i", p(&frames()), "-o", p(&dev)],
        &dev,
        "is a character device",
    );
    assert!(is_char_device(&dev), "bms daily replaced the device");
    // With an extension that gives the format, too.
    let dev_csv = dir.path().join("null.csv");
    char_device(&dev_csv);
    refused(
        &["daily", "-i", p(&frames()), "-o", p(&dev_csv)],
        &dev_csv,
        "is a character device",
    );
    assert!(is_char_device(&dev_csv), "bms daily replaced the device");

    let daily = daily_csv(dir.path());
    refused(
        &["windows", "-i", p(&daily), "-o", p(&dev)],
        &dev,
        "is a character device",
    );
    assert!(is_char_device(&dev), "bms windows replaced the device");

    // A device as --rejects is refused too, before the output is written.
    let out = dir.path().join("w.csv");
    refused(
        &[
            "windows",
            "-i",
            p(&daily),
            "-o",
            p(&out),
            "--rejects",
            p(&dev),
        ],
        &dev,
        "is a character device",
    );
    assert!(is_char_device(&dev));
    assert!(!out.exists(), "the output was written before the refusal");
}

#[test]
fn a_device_among_the_outputs_of_simulate_is_refused_before_any_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("null");
    char_device(&dev);
    let daily = dir.path().join("d.csv");
    refused(
        &[
            "simulate",
            "--vehicles",
            "2",
            "--days",
            "30",
            "--daily",
            p(&daily),
            "--truth",
            p(&dev),
        ],
        &dev,
        "is a character device",
    );
    assert!(is_char_device(&dev));
    assert!(
        !daily.exists(),
        "--daily was written before --truth was refused"
    );
}

#[test]
fn a_symlink_output_is_refused_and_neither_it_nor_its_target_changes() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious.csv");
    std::fs::write(&precious, "keep me\n").unwrap();
    let daily = daily_csv(dir.path());
    let link = dir.path().join("w.csv");
    symlink(&precious, &link);
    let err = refused(
        &["windows", "-i", p(&daily), "-o", p(&link)],
        &link,
        "is a symlink",
    );
    assert!(err.contains("give the path it points to"), "{err}");
    assert_eq!(text(&precious), "keep me\n");
    still_links(&link, &precious);

    // A dangling link, and a link as the output of bms daily.
    let dangling = dir.path().join("dangling.csv");
    symlink(&outside.path().join("missing.csv"), &dangling);
    refused(
        &["daily", "-i", p(&frames()), "-o", p(&dangling)],
        &dangling,
        "is a symlink",
    );
    still_links(&dangling, &outside.path().join("missing.csv"));
    assert!(!outside.path().join("missing.csv").exists());
}

#[test]
fn a_fifo_output_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let daily = daily_csv(dir.path());
    let pipe = dir.path().join("pipe.csv");
    fifo(&pipe);
    refused(
        &["windows", "-i", p(&daily), "-o", p(&pipe)],
        &pipe,
        "is a FIFO",
    );
    assert!(is_fifo(&pipe));
    // --rejects was opened and written in place: a FIFO without a reader blocked it.
    refused(
        &[
            "daily",
            "-i",
            p(&frames()),
            "-o",
            p(&dir.path().join("d2.csv")),
            "--rejects",
            p(&pipe),
        ],
        &pipe,
        "is a FIFO",
    );
    assert!(is_fifo(&pipe));
}

#[test]
fn a_directory_output_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.csv");
    std::fs::create_dir(&target).unwrap();
    refused(
        &["daily", "-i", p(&frames()), "-o", p(&target)],
        &target,
        "is a directory",
    );
    assert!(target.is_dir());
}

#[test]
fn a_regular_existing_output_is_still_overwritten_and_dash_is_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let daily = dir.path().join("daily.csv");
    std::fs::write(&daily, "old\n").unwrap();
    ok(&["daily", "-i", p(&frames()), "-o", p(&daily)]);
    let d = text(&daily);
    assert!(d.starts_with("VIN,Date,"), "{d}");
    let out = ok(&["windows", "-i", p(&daily), "-o", "-"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("LSMALL"));
    assert!(!dir.path().join("-").exists());
}

/// The files of `bms predict --out DIR`.
const STORE_FILES: [&str; 5] = [
    "results.sqlite",
    "events.jsonl",
    "predictions.parquet",
    "rejects.csv",
    "summary.json",
];

#[test]
fn a_store_file_that_is_a_symlink_out_of_the_directory_is_refused_by_name() {
    let work = tempfile::tempdir().unwrap();
    let batch = batch_csv(work.path());
    let outside = tempfile::tempdir().unwrap();
    for name in STORE_FILES {
        let dir = work.path().join(format!("out-{name}"));
        std::fs::create_dir(&dir).unwrap();
        // An empty file: SQLite would take it for a new database and write into it.
        let precious = outside.path().join(format!("{name}.outside"));
        std::fs::write(&precious, "").unwrap();
        let link = dir.join(name);
        symlink(&precious, &link);
        refused(
            &[
                "predict",
                "-m",
                p(&model()),
                "-i",
                p(&batch),
                "--out",
                p(&dir),
            ],
            &link,
            "is a symlink",
        );
        assert_eq!(
            std::fs::read(&precious).unwrap(),
            b"",
            "{name}: the file outside was written"
        );
        still_links(&link, &precious);
        for other in STORE_FILES.iter().filter(|&&o| o != name) {
            assert!(
                !dir.join(other).exists(),
                "{name} refused, yet {other} was written"
            );
        }
    }
}

#[test]
fn a_device_or_fifo_in_the_store_directory_is_refused_without_hanging() {
    let work = tempfile::tempdir().unwrap();
    let batch = batch_csv(work.path());
    let dir = work.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let dev = dir.join("results.sqlite");
    char_device(&dev);
    let model = model();
    let args = [
        "predict",
        "-m",
        p(&model),
        "-i",
        p(&batch),
        "--out",
        p(&dir),
    ];
    refused(&args, &dev, "is a character device");
    assert!(is_char_device(&dev));
    std::fs::remove_file(&dev).unwrap();

    let pipe = dir.join("events.jsonl");
    fifo(&pipe);
    refused(&args, &pipe, "is a FIFO");
    assert!(is_fifo(&pipe));
    std::fs::remove_file(&pipe).unwrap();

    // The lock file is opened for writing: a FIFO there blocked the run.
    let lock = dir.join(".bms-lock");
    let _ = std::fs::remove_file(&lock);
    fifo(&lock);
    refused(&args, &lock, "is a FIFO");
    assert!(is_fifo(&lock));
}

#[test]
fn the_store_directory_itself_may_be_a_symlink_to_a_directory() {
    let work = tempfile::tempdir().unwrap();
    let batch = batch_csv(work.path());
    let real = work.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = work.path().join("out");
    symlink(&real, &link);
    ok(&[
        "predict",
        "-m",
        p(&model()),
        "-i",
        p(&batch),
        "--out",
        p(&link),
    ]);
    still_links(&link, &real);
    for name in STORE_FILES {
        let m = std::fs::symlink_metadata(real.join(name)).unwrap();
        assert!(
            m.is_file(),
            "{name} is not a regular file in the real directory"
        );
    }
    // A second run replaces them as before.
    ok(&[
        "predict",
        "-m",
        p(&model()),
        "-i",
        p(&batch),
        "--out",
        p(&link),
    ]);
    still_links(&link, &real);
}

#[test]
fn a_symlink_among_the_files_of_demo_is_refused_before_any_is_written() {
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside.html");
    std::fs::write(&outside, "keep").unwrap();
    for name in ["report.html", "results.sqlite"] {
        let dir = work.path().join(format!("demo-{name}"));
        std::fs::create_dir(&dir).unwrap();
        let link = dir.join(name);
        symlink(&outside, &link);
        refused(
            &["demo", "--vehicles", "3", "--days", "30", "--out", p(&dir)],
            &link,
            "is a symlink",
        );
        still_links(&link, &outside);
        assert_eq!(text(&outside), "keep");
        assert!(
            !dir.join("daily.csv").exists(),
            "{name} refused after daily.csv was written"
        );
    }
}
