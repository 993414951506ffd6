//! `bms demo`: the whole job in one command, on a simulated fleet: simulate → daily
//! table → windows → shipped model → stores → report.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use bms_core::io;
use bms_core::model::Model;
use bms_core::simulate::{self, SimConfig};
use clap::Args;

use super::predict::{print_summary, run_with_model};
use bms_batch::sink::readable;
use bms_batch::store::{EVENTS_FILE, PARQUET_FILE, REJECTS_FILE, SQLITE_FILE, SUMMARY_FILE};
use bms_batch::{InputFormat, Job};

/// The shipped reference model, built into the binary so that the demo runs from anywhere.
const SHIPPED_MODEL: &[u8] = include_bytes!("../../models/consistency-ref14x6.onnx");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for every output (created; previous demo outputs are replaced).
    #[arg(long, short, default_value = "out/demo")]
    pub out: PathBuf,

    /// Vehicles to simulate.
    #[arg(long, default_value_t = 200)]
    pub vehicles: usize,

    /// Days to simulate.
    #[arg(long, default_value_t = 120)]
    pub days: u32,

    /// Seed of the simulation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Model to use instead of the shipped `consistency-ref14x6` (built in).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let dir = &args.out;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    // Refuse an output it may not replace (SPEC §4) before writing any.
    let own = ["daily.csv", "truth.csv", "report.html"].map(|name| dir.join(name));
    super::check_outputs(own.iter().map(PathBuf::as_path))?;
    bms_batch::sink::check_store_paths(dir)?;
    let model = match &args.model {
        Some(path) => Model::load(path)?,
        None => Model::from_bytes(SHIPPED_MODEL).context("the built-in shipped model")?,
    };
    let config = SimConfig {
        vehicles: args.vehicles,
        days: args.days,
        seed: args.seed,
        ..SimConfig::default()
    };
    config.validate()?;
    eprintln!(
        "1/3 simulating {} vehicles × {} days (seed {}, ~{:.0} % with a weak cell)…",
        config.vehicles,
        config.days,
        config.seed,
        config.weak_fraction * 100.0
    );
    let sim = simulate::simulate_daily(&config)?;
    let daily = dir.join("daily.csv");
    let truth_path = dir.join("truth.csv");
    io::write_daily_csv(&daily, &sim.table, true)?;
    simulate::write_truth_csv(&truth_path, &sim.truth)?;
    readable(&daily);
    readable(&truth_path);
    eprintln!("    {} frames → {} daily rows", sim.frames, sim.table.len());

    eprintln!(
        "2/3 scoring every 14-day window with model {}…",
        model.contract().model_id
    );
    let job = Job {
        format: Some(InputFormat::Daily),
        strict: true,
        daily_config: config.daily_config(),
        ..Job::default()
    };
    let summary = run_with_model(&model, &daily, &job, Some(dir))?;
    print_summary(&summary, Some(dir));

    eprintln!("3/3 writing the report…");
    let report = dir.join("report.html");
    // Labelled by the daily table's alarm days: the report's "Warning before the BMS
    // alarm" section and the lead times below.
    let labels = bms_batch::evaluate::LabelFiles {
        daily: Some(daily.clone()),
        ..Default::default()
    };
    let data = crate::report::write_report(dir, &report, &labels)?;
    let evaluation = &data.evaluation.as_ref().expect("labels given").evaluation;
    let leads: std::collections::HashMap<&str, Option<i64>> = evaluation
        .vehicles
        .iter()
        .map(|v| (v.vin.as_str(), v.lead_days))
        .collect();

    // What it found, against the simulator's truth.
    let truth: std::collections::HashMap<&str, &bms_core::VehicleTruth> =
        sim.truth.iter().map(|t| (t.vin.as_str(), t)).collect();
    let weak = sim.truth.iter().filter(|t| t.weak).count();
    let flagged: Vec<&crate::report::Vehicle> =
        data.vehicles.iter().filter(|v| v.alarm_days > 0).collect();
    let flagged_weak = flagged
        .iter()
        .filter(|v| truth.get(v.vin.as_str()).is_some_and(|t| t.weak))
        .count();
    println!(
        "\nFleet: {} vehicles × {} days; {} windows scored, {} with an alarm (threshold {}).",
        config.vehicles, config.days, summary.scored, summary.alarms, summary.threshold
    );
    println!(
        "Flagged {} vehicles; {} of them really have a weak cell ({} weak cells in the fleet).",
        flagged.len(),
        flagged_weak,
        weak
    );
    if let Some(ev) = &evaluation.events {
        let share = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{:.0} %", 100.0 * v));
        println!(
            "Against the BMS alarms: {} vehicles alarm; warned ≥ 7 days ahead {} ({}), ≥ 1 day {} ({}), never {}; \
{} of {} vehicles that never alarm had a false alarm.",
            ev.alarm_vehicles,
            ev.detected_7d,
            share(ev.detection_rate_7d),
            ev.detected_1d,
            share(ev.detection_rate_1d),
            ev.missed,
            ev.false_alarm_vehicles,
            ev.healthy_vehicles
        );
    }
    println!("\nMost at-risk vehicles:");
    println!(
        "  {:<18} {:>9}  {:<10}  {:<11}  {:>4}  {:<10}",
        "VIN", "max prob", "on", "first alert", "lead", "truth"
    );
    for v in data.vehicles.iter().take(10) {
        let t = truth.get(v.vin.as_str());
        let truth_text = match t {
            Some(t) if t.weak => match t.first_alarm_date {
                Some(d) => format!("weak cell, BMS alarm from {d}"),
                None => "weak cell, no BMS alarm yet".to_owned(),
            },
            Some(t) => match t.first_alarm_date {
                Some(d) => format!("no weak cell, BMS alarm from {d}"),
                None => "healthy".to_owned(),
            },
            None => "?".to_owned(),
        };
        let lead = leads
            .get(v.vin.as_str())
            .copied()
            .flatten()
            .map_or("–".to_owned(), |l| format!("{l}d"));
        println!(
            "  {:<18} {:>9.3}  {:<10}  {:<11}  {lead:>4}  {truth_text}",
            v.vin,
            v.max_prob,
            v.max_date.to_string(),
            v.first_alarm
                .map(|d| d.to_string())
                .unwrap_or_else(|| "–".into()),
        );
    }
    println!("\nFiles in {}:", dir.display());
    for (name, what) in [
        ("report.html", "the fleet report (open it in a browser)"),
        (PARQUET_FILE, "every prediction with its features"),
        (EVENTS_FILE, "the reference solution's stored-event JSON"),
        (SQLITE_FILE, "table `predictions`, upserted by event id"),
        (SUMMARY_FILE, "counts and timing"),
        (
            REJECTS_FILE,
            "input rows set aside (none for simulated data)",
        ),
        (
            "daily.csv",
            "the simulated daily table (reference schema + extended)",
        ),
        ("truth.csv", "which vehicles really have a weak cell"),
    ] {
        println!("  {:<20} {what}", name);
    }
    println!("Done in {:.1} s.", started.elapsed().as_secs_f64());
    Ok(())
}
