//! Load on `bms gateway` from a separate process on loopback (issue: 10,000 vehicles at
//! once, ≥ 20,000 packets/s, 0 lost frames, p99 packet → acknowledgement < 5 ms, RSS
//! < 1 GiB). Not part of CI; results in benches/RESULTS.md.
//!
//! ```sh
//! cargo bench --bench gateway_load -- [--bms target/release/bms] \
//!     [--connections 10000] [--rate 20000] [--seconds 30] [--cells 96] [--probes 32] [--pin]
//! ```
//!
//! `--bms` defaults to the `bms` cargo built with the bench. Under `cargo test` (no
//! `--bench` argument) it runs a small load instead (50 connections, 500 reports/s, 2 s)
//! and fails if a vehicle fails or an acknowledged frame is not in the store.
//!
//! The bench starts the gateway itself (`--store` in a temporary directory, pinned to CPU 0
//! with `taskset` when `--pin`, this process on CPU 1), opens every connection and logs
//! each vehicle in, then every vehicle sends one realtime packet (96 cells, 32 probes)
//! every `connections / rate` seconds of wall time, each one 10 s of simulated time after
//! the last, waiting for each reply as a terminal does. It measures the time from the
//! write of a report to the arrival of its `01` reply, the gateway's peak RSS (VmHWM) and,
//! after SIGTERM, the frames in the frames store against the reports acknowledged.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bms_core::FrameRef;
use bms_core::gbt32960::{Decoder, Edition, Event, command, encode, response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    bms: PathBuf,
    connections: usize,
    rate: f64,
    seconds: f64,
    cells: usize,
    probes: usize,
    pin: bool,
    /// Run by `cargo test` (no `--bench`): a small load, and a failure if a frame is lost.
    smoke: bool,
}

fn args() -> Args {
    let mut a = Args {
        bms: PathBuf::from(env!("CARGO_BIN_EXE_bms")),
        connections: 10_000,
        rate: 20_000.0,
        seconds: 30.0,
        cells: 96,
        probes: 32,
        pin: false,
        smoke: !std::env::args().any(|a| a == "--bench"),
    };
    if a.smoke {
        (a.connections, a.rate, a.seconds) = (50, 500.0, 2.0);
    }
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bms" => a.bms = PathBuf::from(v()),
            "--connections" => a.connections = v().parse().expect("--connections N"),
            "--rate" => a.rate = v().parse().expect("--rate PACKETS_PER_S"),
            "--seconds" => a.seconds = v().parse().expect("--seconds S"),
            "--cells" => a.cells = v().parse().expect("--cells N"),
            "--probes" => a.probes = v().parse().expect("--probes N"),
            "--pin" => a.pin = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// 2024-03-01 00:00 UTC: simulated time of each vehicle's first report.
const T0: i64 = 1_709_251_200_000;

fn vin(i: usize) -> String {
    format!("LBMSLOAD{i:09}")
}

/// Reads until one whole reply packet is decoded; its response flag.
async fn reply(s: &mut TcpStream, d: &mut Decoder, buf: &mut [u8]) -> std::io::Result<u8> {
    loop {
        if let Some(e) = d.next() {
            return match e {
                Event::Packet(info) => Ok(info.response),
                other => Err(std::io::Error::other(format!("not a reply: {other:?}"))),
            };
        }
        let n = s.read(buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed by the gateway"));
        }
        d.push(&buf[..n]);
    }
}

struct Totals {
    acked: AtomicU64,
    failed: AtomicU64,
}

#[allow(clippy::too_many_arguments)]
async fn vehicle(
    i: usize,
    addr: std::net::SocketAddr,
    cells: usize,
    probes: usize,
    seconds: f64,
    period: Duration,
    logged_in: Arc<tokio::sync::Barrier>,
    totals: Arc<Totals>,
) -> Vec<u32> {
    let v = vin(i);
    let mut lat = Vec::new();
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vehicle {i}: connect: {e}");
            totals.failed.fetch_add(1, Ordering::Relaxed);
            logged_in.wait().await;
            return lat;
        }
    };
    let _ = s.set_nodelay(true);
    let (mut d, mut buf) = (Decoder::new(), vec![0u8; 4096]);
    let login = encode::vehicle_login(Edition::V2016, &v, T0, 1, "89860000000000000000", &[])
        .expect("login");
    let ok = s.write_all(&login).await.is_ok()
        && matches!(reply(&mut s, &mut d, &mut buf).await, Ok(response::SUCCESS));
    // Reports start once every vehicle is logged in.
    logged_in.wait().await;
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    if !ok {
        eprintln!("vehicle {i}: login not answered 01");
        totals.failed.fetch_add(1, Ordering::Relaxed);
        return lat;
    }
    let cell_v: Vec<f64> = (0..cells)
        .map(|c| 3.6 + 0.001 * ((c + i) % 7) as f64)
        .collect();
    let temps: Vec<f64> = (0..probes).map(|p| 25.0 + (p % 3) as f64).collect();
    let mut packet = Vec::with_capacity(64 + 2 * cells + probes);
    // Vehicles spread evenly over the period.
    let offset = period.mul_f64((i % 1000) as f64 / 1000.0);
    let mut next = start + offset;
    let mut k = 0i64;
    while next < end {
        tokio::time::sleep_until(next).await;
        next += period;
        packet.clear();
        let f = FrameRef {
            vin: &v,
            timestamp_ms: T0 + k * 10_000,
            pack_voltage: 350.0,
            pack_current: -10.0 + (k % 20) as f64,
            soc: 80.0,
            cell_voltages: &cell_v,
            temperatures: &temps,
            alarm_flags: Some(0),
        };
        k += 1;
        encode::frame_packet_into(&mut packet, Edition::V2016, command::REALTIME, &f)
            .expect("report");
        let t = Instant::now();
        if let Err(e) = s.write_all(&packet).await {
            eprintln!("vehicle {i}: write: {e}");
            totals.failed.fetch_add(1, Ordering::Relaxed);
            break;
        }
        match reply(&mut s, &mut d, &mut buf).await {
            Ok(response::SUCCESS) => {
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                totals.acked.fetch_add(1, Ordering::Relaxed);
            }
            other => {
                eprintln!("vehicle {i}: report answered {other:?}");
                totals.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    let _ = s.shutdown().await;
    lat
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ref14x6.onnx");
    let mut cmd = if a.pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&a.bms);
        c
    } else {
        Command::new(&a.bms)
    };
    let mut gw = cmd
        .args(["gateway", "--listen", "127.0.0.1:0", "--model"])
        .arg(&model)
        .arg("--store")
        .arg(&store)
        .args(["--max-connections", &(a.connections + 10).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the gateway");
    let stderr = gw.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().parse::<std::net::SocketAddr>().unwrap());
            }
            lines.push(line);
        }
        lines
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the gateway did not start");
    if a.pin {
        let _ = Command::new("taskset")
            .args(["-cp", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let period = Duration::from_secs_f64(a.connections as f64 / a.rate);
    let totals = Arc::new(Totals {
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let (lat, connect_s, run_s) = rt.block_on(async {
        let t = Instant::now();
        let barrier = Arc::new(tokio::sync::Barrier::new(a.connections + 1));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..a.connections {
            let (barrier, totals) = (barrier.clone(), totals.clone());
            let (cells, probes, seconds) = (a.cells, a.probes, a.seconds);
            tasks.spawn(vehicle(
                i, addr, cells, probes, seconds, period, barrier, totals,
            ));
            // Keep the connect storm within the listen backlog.
            if i % 500 == 499 {
                tokio::task::yield_now().await;
            }
        }
        barrier.wait().await;
        let connect_s = t.elapsed().as_secs_f64();
        eprintln!(
            "{} connections logged in after {connect_s:.1} s; {} failed",
            a.connections,
            totals.failed.load(Ordering::Relaxed)
        );
        let t = Instant::now();
        let mut lat = Vec::new();
        while let Some(r) = tasks.join_next().await {
            lat.extend(r.expect("vehicle task"));
        }
        (lat, connect_s, t.elapsed().as_secs_f64())
    });
    let hwm = vm_hwm_kib(gw.id());
    let _ = Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status();
    let status = gw.wait().expect("gateway exit");
    let lines = log.join().unwrap();
    assert!(status.success(), "gateway: {status}\n{}", lines.join("\n"));
    let mut stored = 0usize;
    let frames = store.join("frames");
    for day in std::fs::read_dir(&frames).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(day.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let got = bms_core::io::parquet::read_frames_parquet(
                &f.path(),
                bms_core::io::ReadMode::Strict,
            )
            .expect("frames store file");
            stored += got.data.len();
        }
    }
    let mut lat = lat;
    lat.sort_unstable();
    let acked = totals.acked.load(Ordering::Relaxed);
    println!(
        "gateway_load: {} connections held at once (logged in within {connect_s:.1} s), {:.0} reports/s for {run_s:.1} s \
         ({} cells, {} probes, target {:.0}/s)",
        a.connections,
        acked as f64 / run_s,
        a.cells,
        a.probes,
        a.rate
    );
    println!(
        "gateway_load: report -> 01 reply: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        pct(&lat, 1.0)
    );
    println!(
        "gateway_load: acknowledged {acked}, stored {stored}, lost {}; failures {}; gateway peak RSS {:.0} MiB",
        acked as i64 - stored as i64,
        totals.failed.load(Ordering::Relaxed),
        hwm as f64 / 1024.0
    );
    if a.smoke {
        assert_eq!(totals.failed.load(Ordering::Relaxed), 0, "vehicles failed");
        assert!(acked > 0, "nothing acknowledged");
        assert_eq!(
            acked, stored as u64,
            "acknowledged frames missing from the store"
        );
    }
}
