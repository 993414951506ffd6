//! `bms report`: a self-contained HTML page, checked as text and rendered by headless
//! Chromium (screenshot not blank, charts drawn, no console messages). On a developer
//! machine without Chromium the rendering part skips, saying so; under CI (`CI` set) it
//! fails instead (`scripts/ensure-chromium.sh` installs Debian's `chromium` package).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bms_batch::store::parquet::read_predictions;
use common::{bms, ok, p, stderr, text};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fleet with some weak cells, scored and reported.
fn reported() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&[
        "simulate",
        "--vehicles",
        "16",
        "--days",
        "90",
        "--seed",
        "1",
        "--weak-fraction",
        "0.3",
        "--daily",
        p(&d.join("daily.csv")),
    ]);
    let out = d.join("out");
    ok(&[
        "predict",
        "-m",
        p(&root().join("models/consistency-ref14x6.onnx")),
        "-i",
        p(&d.join("daily.csv")),
        "--out",
        p(&out),
    ]);
    ok(&["report", p(&out)]);
    (dir, out)
}

#[test]
fn a_missing_or_broken_summary_is_an_error_that_names_it() {
    let (_dir, out) = reported();
    let summary = out.join("summary.json");
    std::fs::write(&summary, "{\"input\": \"x\"}").unwrap();
    let o = bms(&["report", p(&out)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("summary.json") && stderr(&o).contains("missing field"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(&summary).unwrap();
    let o = bms(&["report", p(&out)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("summary.json"), "{}", stderr(&o));
}

#[test]
fn the_report_is_self_contained_and_ranks_vehicles_by_risk() {
    let (_dir, out) = reported();
    let html = text(&out.join("report.html"));
    // `-o -`: the same page on standard output.
    let o = ok(&["report", p(&out), "-o", "-"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), html);
    assert!(stderr(&o).contains("<stdout>: "), "{}", stderr(&o));
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Nothing is fetched: no scripts, no external URLs, a policy that forbids loading.
    for banned in [
        "<script", "http://", "https://", "@import", "url(", "<link", "src=",
    ] {
        assert!(!html.contains(banned), "report contains {banned}");
    }
    assert!(html.contains("Content-Security-Policy"));
    // The at-risk table lists vehicles by their highest probability, highest first.
    let preds = read_predictions(&out).unwrap().rows;
    let mut best: std::collections::BTreeMap<&str, f32> = Default::default();
    for r in &preds {
        let e = best.entry(&r.vin).or_insert(0.0);
        *e = e.max(r.predicted_prob);
    }
    let mut ranked: Vec<(&str, f32)> = best.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let table = &html[html.find("Most at-risk vehicles").unwrap()..];
    let mut at = 0;
    for (vin, prob) in ranked.iter().take(bms::report::TABLE_ROWS) {
        let pos = table[at..]
            .find(vin)
            .unwrap_or_else(|| panic!("{vin} missing or out of order"));
        at += pos;
        assert!(table[at..].contains(&format!("{prob:.3}")));
    }
    // One histogram plus one chart per charted vehicle, each with three panels.
    let charts = ranked.len().min(bms::report::CHARTS);
    assert_eq!(html.matches("<svg").count(), 1 + charts);
    assert_eq!(html.matches("cell-voltage spread (mV)").count(), charts);
    assert_eq!(html.matches("temperature delta (°C)").count(), charts);
    let summary: serde_json::Value =
        serde_json::from_str(&text(&out.join("summary.json"))).unwrap();
    assert!(html.contains(&format!("threshold {}", summary["threshold"])));
    // The most at-risk vehicle's chart comes first and its spread is drawn.
    let first_chart = html.find("id=\"v0\"").unwrap();
    assert!(html[first_chart..].contains(ranked[0].0));
    assert!(html[first_chart..].contains("<polyline class=\"s1\""));
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    })
}

/// Renders `page` headless: (screenshot RGBA pixels, width, console lines on stderr).
fn render(chrome: &Path, page: &Path, png: &Path) -> (Vec<u8>, u32, Vec<String>) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--log-level=0",
            "--window-size=1100,2200",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {err}");
    let console = err
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let rgba: Vec<u8> = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|c| [c[0], c[1], c[2], 255])
            .collect(),
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (rgba, info.width, console)
}

fn count_color(rgba: &[u8], rgb: [u8; 3], tol: i32) -> usize {
    rgba.chunks_exact(4)
        .filter(|c| (0..3).all(|k| (i32::from(c[k]) - i32::from(rgb[k])).abs() <= tol))
        .count()
}

#[test]
fn chromium_renders_the_report_without_console_messages() {
    let Some(chrome) = chromium() else {
        // Under CI the page must be rendered: a missing browser is a failure there.
        assert!(
            std::env::var("CI").map_or(true, |v| v.is_empty() || v == "false"),
            "CI is set but chromium is not installed (scripts/ensure-chromium.sh installs \
             Debian's `chromium` package): the report cannot be rendered"
        );
        eprintln!(
            "SKIPPED: chromium is not installed (run scripts/ensure-chromium.sh, which installs \
             Debian's `chromium` package); the report was not rendered"
        );
        return;
    };
    let (dir, out) = reported();
    let shot = dir.path().join("report.png");
    let (rgba, width, console) = render(&chrome, &out.join("report.html"), &shot);
    assert_eq!(width, 1100);
    assert!(console.is_empty(), "console messages: {console:#?}");
    let pixels = rgba.len() / 4;
    let white = count_color(&rgba, [255, 255, 255], 3);
    assert!(
        white < pixels * 97 / 100,
        "screenshot is blank: {white} of {pixels} pixels white"
    );
    // Histogram bars (#627d98), threshold and alarm marks (#d64545) and the spread
    // lines (#2680c2) are on screen.
    for (name, rgb) in [
        ("histogram bars", [0x62, 0x7d, 0x98]),
        ("threshold/alarm red", [0xd6, 0x45, 0x45]),
        ("spread lines", [0x26, 0x80, 0xc2]),
    ] {
        let n = count_color(&rgba, rgb, 12);
        assert!(n > 200, "{name}: only {n} pixels of the expected colour");
    }

    // Control: the same check does see a page's console errors and a blank page.
    let bad = dir.path().join("bad.html");
    std::fs::write(
        &bad,
        "<html><body><script>throw new Error('control-boom')</script></body></html>",
    )
    .unwrap();
    let (rgba, _, console) = render(&chrome, &bad, &dir.path().join("bad.png"));
    assert!(
        console.iter().any(|l| l.contains("control-boom")),
        "{console:#?}"
    );
    assert!(count_color(&rgba, [255, 255, 255], 3) >= rgba.len() / 4 * 97 / 100);
}

/// `bms report DIR --daily FILE`: the "Warning before the BMS alarm" section shows the
/// figures `bms evaluate` gives for the same files, one table row per vehicle that alarms,
/// the lead-time histogram, and the BMS alarm days marked in the charts.
#[test]
fn labels_add_the_warning_section_with_the_figures_of_bms_evaluate() {
    let (dir, out) = reported();
    let daily = dir.path().join("daily.csv");
    let plain = text(&out.join("report.html"));
    assert!(!plain.contains("Warning before the BMS alarm"));
    let page = dir.path().join("labelled.html");
    ok(&["report", p(&out), "--daily", p(&daily), "-o", p(&page)]);
    let html = text(&page);
    let e: serde_json::Value = serde_json::from_slice(
        &ok(&["evaluate", p(&out), "--daily", p(&daily), "--json", "-"]).stdout,
    )
    .unwrap();
    let ev = &e["events"];
    let section = &html[html.find("Warning before the BMS alarm").unwrap()
        ..html.find("Distribution of predicted").unwrap()];
    assert!(
        section.contains(&format!("{} windows evaluated", e["window"]["windows"])),
        "{section}"
    );
    assert!(section.contains(&format!(
        "<b>{}</b><span>vehicles that alarm",
        ev["alarm_vehicles"]
    )));
    assert!(section.contains(&format!("<b>{}</b><span>never warned", ev["missed"])));
    let alarmed: Vec<&serde_json::Value> = e["vehicles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !v["first_alarm"].is_null())
        .collect();
    assert!(
        !alarmed.is_empty(),
        "the fleet has weak cells: some vehicle alarms"
    );
    assert_eq!(section.matches("<tr").count(), 1 + alarmed.len());
    for v in &alarmed {
        assert!(section.contains(v["vin"].as_str().unwrap()));
    }
    for b in ev["lead_histogram"].as_array().unwrap() {
        assert!(section.contains(&format!(
            "<title>{}: {} vehicles</title>",
            b["bin"].as_str().unwrap(),
            b["vehicles"]
        )));
    }
    // One more chart (the lead-time histogram); alarm days of charted vehicles marked.
    assert_eq!(
        html.matches("<svg").count(),
        plain.matches("<svg").count() + 1
    );
    let daily_text = text(&daily);
    let charted: Vec<&str> = html
        .match_indices("<h3 id=\"v")
        .map(|(i, _)| {
            let h = &html[i..];
            let start = h.find("class=\"vin\">").unwrap() + "class=\"vin\">".len();
            &h[start..start + 17]
        })
        .collect();
    let marks = html.matches("<title>BMS alarm ").count();
    let expected: usize = charted
        .iter()
        .map(|vin| {
            // Alarm days of the vehicle inside its charted (predicted) date range.
            let preds = read_predictions(&out).unwrap().rows;
            let dates: Vec<chrono::NaiveDate> = preds
                .iter()
                .filter(|r| r.vin == *vin)
                .map(|r| r.date)
                .collect();
            let (lo, hi) = (dates.iter().min().unwrap(), dates.iter().max().unwrap());
            daily_text
                .lines()
                .filter(|l| {
                    l.starts_with(&format!("\"{vin}\",")) || l.starts_with(&format!("{vin},"))
                })
                .filter(|l| {
                    let f: Vec<&str> = l.split(',').collect();
                    let date: chrono::NaiveDate = f[1].parse().unwrap();
                    f[8] == "1.0" && date >= *lo && date <= *hi
                })
                .count()
        })
        .sum();
    assert_eq!(marks, expected);
    assert!(marks > 0, "no charted vehicle has an alarm day in view");
}
