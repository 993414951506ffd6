//! `bms gateway` end to end: the built binary on 127.0.0.1 (port 0), vehicles as TCP
//! clients sending `bms simulate --gbt32960` packets, SIGTERM, then the frames store and
//! the prediction stores compared with `bms ingest` and `bms predict --out` on the same
//! packets.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bms_batch::store::{Prediction, SQLITE_FILE, SqliteStore};
use bms_core::Frame;
use bms_core::gbt32960::{Decoder, Edition, Event, command, encode, response};
use bms_core::io::ReadMode;
use bms_core::io::parquet::read_frames_parquet;
use common::{ok, p, self_signed, tls_client};

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ref14x6.onnx")
}

/// A running `bms gateway`; killed when dropped.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    /// Reads the child's stderr into `log` until it closes.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    fn start(store: &Path, args: &[&str]) -> Gateway {
        Gateway::start_env(store, args, &[])
    }

    fn start_env(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bms"))
            .arg("gateway")
            .args(["--listen", "127.0.0.1:0", "--model", p(&model_path())])
            .args(["--store", p(store)])
            .args(args)
            .env_remove("BMS_MODEL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bms gateway");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let wants_admin = args.contains(&"--admin");
        let reader = std::thread::spawn(move || {
            let mut addr = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.split("listening on ").nth(1) {
                    addr = Some(a.trim().parse::<SocketAddr>().unwrap());
                    if !wants_admin {
                        let _ = tx.send((addr.unwrap(), None));
                    }
                }
                if let Some(a) = line.split("admin on http://").nth(1) {
                    let _ = tx.send((addr.unwrap(), Some(a.trim().parse().unwrap())));
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let (addr, admin) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gateway did not start: {}", log.lock().unwrap());
            }
        };
        Gateway {
            child,
            addr,
            admin,
            log,
            reader: Some(reader),
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status (within 20 s).
    fn stop(&mut self) -> std::process::ExitStatus {
        let st = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .unwrap();
        assert!(st.success());
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Every line the gateway wrote is in the log once its stderr closed.
                if let Some(r) = self.reader.take() {
                    r.join().unwrap();
                }
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "did not exit: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metrics(&self) -> String {
        http_get(self.admin.expect("--admin"), "/metrics").1
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// The value of an unlabelled or labelled metric line, 0 when absent.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// One packet of a capture.
#[derive(Debug, Clone)]
struct Pkt {
    vin: String,
    command: u8,
    time_ms: Option<i64>,
    bytes: Vec<u8>,
}

/// Every packet of a capture, in order.
fn packets(capture: &[u8]) -> Vec<Pkt> {
    let mut d = Decoder::new();
    d.push(capture);
    d.finish();
    let mut out = Vec::new();
    while let Some(e) = d.next() {
        let info = match e {
            Event::Frame(info, _) | Event::Packet(info) => info,
            Event::Error(e) => panic!("capture: {e}"),
        };
        let at = info.offset as usize;
        out.push(Pkt {
            vin: info.id().to_owned(),
            command: info.command,
            time_ms: info.time_ms,
            bytes: capture[at..at + info.len].to_vec(),
        });
    }
    out
}

/// A simulated fleet's capture: its packets, the frames `bms ingest` reads from it, and
/// the directory of the files.
struct Fleet {
    dir: tempfile::TempDir,
    packets: Vec<Pkt>,
}

fn fleet(vehicles: usize, days: u32) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("cap.gbt32960");
    ok(&[
        "simulate",
        "--vehicles",
        &vehicles.to_string(),
        "--days",
        &days.to_string(),
        "--interval",
        "5m",
        "--cells",
        "12",
        "--probes",
        "4",
        "--seed",
        "7",
        "--gbt32960",
        p(&cap),
    ]);
    let packets = packets(&std::fs::read(&cap).unwrap());
    Fleet { dir, packets }
}

/// Writes `packets` as a capture, ingests it, and returns the frames.
fn ingest(dir: &Path, name: &str, packets: &[&Pkt]) -> (PathBuf, Vec<Frame>) {
    let cap = dir.join(format!("{name}.gbt32960"));
    let bytes: Vec<u8> = packets.iter().flat_map(|p| p.bytes.clone()).collect();
    std::fs::write(&cap, bytes).unwrap();
    let frames = dir.join(format!("{name}.parquet"));
    ok(&["ingest", "-i", p(&cap), "-o", p(&frames)]);
    let got = read_frames_parquet(&frames, ReadMode::Strict).unwrap().data;
    (frames, got.iter().map(|f| f.to_owned()).collect())
}

/// Every frame in the gateway's frames store, with the partition each lies in.
fn stored_frames(store: &Path) -> Vec<(String, Frame)> {
    let mut out = Vec::new();
    let root = store.join("frames");
    let Ok(parts) = std::fs::read_dir(&root) else {
        return out;
    };
    for part in parts {
        let part = part.unwrap().path();
        let name = part.file_name().unwrap().to_str().unwrap().to_owned();
        for f in std::fs::read_dir(&part).unwrap() {
            let f = f.unwrap().path();
            assert_eq!(f.extension().unwrap(), "parquet", "{}", f.display());
            let frames = read_frames_parquet(&f, ReadMode::Strict).unwrap().data;
            out.extend(frames.iter().map(|fr| (name.clone(), fr.to_owned())));
        }
    }
    out
}

/// Frames as comparable keys: NaN-safe bit patterns, sorted by VIN and time.
fn canon(frames: impl IntoIterator<Item = Frame>) -> Vec<(String, i64, Vec<u64>, Option<u32>)> {
    let mut v: Vec<_> = frames
        .into_iter()
        .map(|f| {
            let mut bits = vec![
                f.pack_voltage.to_bits(),
                f.pack_current.to_bits(),
                f.soc.to_bits(),
            ];
            bits.extend(f.cell_voltages.iter().map(|x| x.to_bits()));
            bits.push(u64::MAX);
            bits.extend(f.temperatures.iter().map(|x| x.to_bits()));
            (f.vin, f.timestamp_ms, bits, f.alarm_flags)
        })
        .collect();
    v.sort();
    v
}

fn batch_predictions(dir: &Path, frames: &Path) -> Vec<Prediction> {
    let out = dir.join(format!(
        "batch-{}",
        frames.file_stem().unwrap().to_str().unwrap()
    ));
    ok(&[
        "predict",
        "-m",
        p(&model_path()),
        "-i",
        p(frames),
        "--out",
        p(&out),
    ]);
    predictions(&out)
}

fn predictions(dir: &Path) -> Vec<Prediction> {
    let path = dir.join(SQLITE_FILE);
    if !path.exists() {
        return Vec::new();
    }
    let mut v = SqliteStore::open(&path).unwrap().all().unwrap();
    v.sort_by(|a, b| (&a.vin, a.date).cmp(&(&b.vin, b.date)));
    v
}

fn assert_same_predictions(got: &[Prediction], want: &[Prediction]) {
    assert_eq!(got.len(), want.len(), "{got:#?}\n{want:#?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.vin, g.date), (&w.vin, w.date));
        assert_eq!(g.event_id, w.event_id);
        assert_eq!(g.predicted_prob, w.predicted_prob, "{} {}", g.vin, g.date);
        assert_eq!(g.alarm, w.alarm);
        assert_eq!(g.model_id, w.model_id);
        assert_eq!(g.features, w.features);
    }
}

/// A vehicle's connection: sends bytes, reads the gateway's reply packets.
struct Client {
    s: TcpStream,
    d: Decoder,
    /// (command, response flag) of every reply received, in order.
    replies: Vec<(u8, u8)>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            s,
            d: Decoder::new(),
            replies: Vec::new(),
        }
    }

    /// Sends `bytes` in pieces of `piece` bytes.
    fn send(&mut self, bytes: &[u8], piece: usize) {
        for c in bytes.chunks(piece) {
            self.s.write_all(c).unwrap();
        }
    }

    /// Reads until `n` replies in all have arrived (fails after the read timeout).
    fn wait_replies(&mut self, n: usize) {
        read_replies(&mut self.s, &mut self.d, &mut self.replies, n);
    }

    /// Waits until the gateway closes the connection, with nothing more sent.
    fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        match self.s.read(&mut buf) {
            Ok(0) => {}
            Ok(k) => panic!("{k} unexpected bytes"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("not closed: {e}"),
        }
    }
}

fn by_vin(packets: &[Pkt]) -> BTreeMap<String, Vec<&Pkt>> {
    let mut m: BTreeMap<String, Vec<&Pkt>> = BTreeMap::new();
    for p in packets {
        m.entry(p.vin.clone()).or_default().push(p);
    }
    m
}

const DAY_MS: i64 = 86_400_000;

#[test]
fn a_fleet_at_once_every_frame_acknowledged_stored_and_scored_as_bms_predict() {
    let fleet = fleet(4, 17);
    let store = fleet.dir.path().join("store");
    let mut gw = Gateway::start(&store, &["--admin", "127.0.0.1:0"]);
    assert_eq!(http_get(gw.admin.unwrap(), "/ping").0, 200);
    let vehicles = by_vin(&fleet.packets);
    assert!(vehicles.len() >= 3, "{}", vehicles.len());
    let addr = gw.addr;
    let packets = &fleet.packets;
    std::thread::scope(|s| {
        for (k, (_, pkts)) in vehicles.iter().enumerate() {
            s.spawn(move || {
                let mut c = Client::connect(addr);
                // Packets cut into pieces of 1, 7, 100 or 4096 bytes: any split decodes
                // the same.
                let piece = [1, 7, 100, 4096][k % 4];
                let bytes: Vec<u8> = pkts.iter().flat_map(|p| p.bytes.clone()).collect();
                c.send(&bytes, piece);
                c.wait_replies(pkts.len());
                let want: Vec<(u8, u8)> = pkts
                    .iter()
                    .map(|p| (p.command, response::SUCCESS))
                    .collect();
                assert_eq!(c.replies, want);
            });
        }
        // A client sending garbage, then a report of a VIN it never logged in, then a
        // report with a wrong checksum: nothing answered, nothing stored, the others
        // undisturbed.
        s.spawn(move || {
            let mut c = Client::connect(addr);
            let mut junk: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
            junk.extend_from_slice(b"##\x02\xFEnot a vin at all");
            let report = packets
                .iter()
                .find(|p| p.command == command::REALTIME)
                .unwrap();
            junk.extend_from_slice(&report.bytes);
            let mut bad = report.bytes.clone();
            *bad.last_mut().unwrap() ^= 0x55;
            junk.extend_from_slice(&bad);
            c.send(&junk, 333);
            c.s.shutdown(Shutdown::Write).unwrap();
            c.expect_closed();
            assert!(c.replies.is_empty());
        });
    });
    let m = gw.metrics();
    let frames = fleet
        .packets
        .iter()
        .filter(|p| p.command == command::REALTIME)
        .count() as u64;
    assert_eq!(
        metric(&m, "bms_gateway_frames_accepted_total"),
        frames,
        "{m}"
    );
    assert_eq!(
        metric(&m, "bms_gateway_refused_total{kind=\"not-logged-in\"}"),
        1,
        "{m}"
    );
    assert!(
        metric(&m, "bms_gateway_refused_total{kind=\"checksum\"}") >= 1,
        "{m}"
    );
    assert!(
        metric(&m, "bms_gateway_refused_total{kind=\"not-a-packet\"}") >= 1,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "bms_gateway_packets_total{command=\"01\",name=\"vehicle login\"}"
        ),
        vehicles.len() as u64,
        "{m}"
    );
    assert!(gw.stop().success(), "{}", gw.log());

    let all: Vec<&Pkt> = fleet.packets.iter().collect();
    let (frames_file, sent) = ingest(fleet.dir.path(), "sent", &all);
    assert_eq!(sent.len() as u64, frames);
    let stored = stored_frames(&store);
    for (part, f) in &stored {
        let day = f.timestamp_ms.div_euclid(DAY_MS);
        let date = bms_core::daily::date_of_day(day).unwrap();
        assert_eq!(part, &format!("date={}", date.format("%Y-%m-%d")));
    }
    assert_eq!(canon(stored.into_iter().map(|(_, f)| f)), canon(sent));
    assert!(!store.join("journal").read_dir().unwrap().any(|_| true));
    let want = batch_predictions(fleet.dir.path(), &frames_file);
    assert!(!want.is_empty());
    assert_same_predictions(&predictions(&store), &want);
}

#[test]
fn reissued_and_older_frames_are_stored_as_history_only() {
    let fleet = fleet(1, 17);
    let pkts: Vec<&Pkt> = fleet.packets.iter().collect();
    let day = |p: &Pkt| p.time_ms.unwrap().div_euclid(DAY_MS);
    let reports: Vec<&Pkt> = pkts
        .iter()
        .copied()
        .filter(|p| p.command == command::REALTIME)
        .collect();
    // The third day's reports are held back and sent after the rest: the first half as
    // reissues (`03`, BCC fixed), the second half as late realtime reports.
    let first = day(reports[0]);
    let held_day = (first + 1..first + 10)
        .find(|&d| reports.iter().filter(|p| day(p) == d).count() >= 2)
        .unwrap();
    let held: Vec<&Pkt> = reports
        .iter()
        .copied()
        .filter(|p| day(p) == held_day)
        .collect();
    assert!(held.len() >= 2);
    let mut order: Vec<Pkt> = pkts
        .iter()
        .filter(|p| {
            p.command != command::VEHICLE_LOGOUT && !held.iter().any(|h| h.bytes == p.bytes)
        })
        .map(|p| (*p).clone())
        .collect();
    for (i, h) in held.iter().enumerate() {
        let mut p = (*h).clone();
        if i < held.len() / 2 {
            p.bytes[2] = command::REISSUE;
            *p.bytes.last_mut().unwrap() ^= command::REALTIME ^ command::REISSUE;
            p.command = command::REISSUE;
        }
        order.push(p);
    }
    let store = fleet.dir.path().join("store");
    let mut gw = Gateway::start(&store, &["--admin", "127.0.0.1:0"]);
    let mut c = Client::connect(gw.addr);
    let bytes: Vec<u8> = order.iter().flat_map(|p| p.bytes.clone()).collect();
    c.send(&bytes, 1000);
    c.wait_replies(order.len());
    let want: Vec<(u8, u8)> = order
        .iter()
        .map(|p| (p.command, response::SUCCESS))
        .collect();
    assert_eq!(c.replies, want);
    // The monitors are fed after the replies are sent: wait for the count.
    let t = Instant::now();
    let m = loop {
        let m = gw.metrics();
        if metric(&m, "bms_gateway_frames_history_total") >= held.len() as u64
            || t.elapsed() > Duration::from_secs(10)
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        metric(&m, "bms_gateway_frames_history_total"),
        held.len() as u64,
        "{m}"
    );
    drop(c);
    assert!(gw.stop().success(), "{}", gw.log());

    // Stored: every frame. Scored: as if the held day had no frames.
    let (_, sent) = ingest(fleet.dir.path(), "all", &pkts);
    assert_eq!(
        canon(stored_frames(&store).into_iter().map(|(_, f)| f)),
        canon(sent)
    );
    let without: Vec<&Pkt> = pkts
        .iter()
        .copied()
        .filter(|p| !held.iter().any(|h| h.bytes == p.bytes))
        .collect();
    let (frames_without, _) = ingest(fleet.dir.path(), "without", &without);
    let want = batch_predictions(fleet.dir.path(), &frames_without);
    assert!(!want.is_empty());
    assert_same_predictions(&predictions(&store), &want);
}

#[test]
fn a_disconnect_mid_packet_loses_only_that_packet() {
    let fleet = fleet(1, 3);
    let pkts: Vec<&Pkt> = fleet
        .packets
        .iter()
        .filter(|p| p.command != command::VEHICLE_LOGOUT)
        .collect();
    let cut = pkts.len() / 2;
    let store = fleet.dir.path().join("store");
    let mut gw = Gateway::start(&store, &[]);
    let mut c = Client::connect(gw.addr);
    let bytes: Vec<u8> = pkts[..cut].iter().flat_map(|p| p.bytes.clone()).collect();
    c.send(&bytes, 512);
    c.wait_replies(cut);
    let half = &pkts[cut].bytes[..pkts[cut].bytes.len() / 2];
    c.send(half, 512);
    drop(c);
    // A second connection logs in again and sends the rest, the cut packet included.
    let mut c = Client::connect(gw.addr);
    let mut rest: Vec<u8> = pkts[0].bytes.clone();
    rest.extend(pkts[cut..].iter().flat_map(|p| p.bytes.clone()));
    c.send(&rest, 512);
    c.wait_replies(1 + pkts.len() - cut);
    drop(c);
    assert!(gw.stop().success(), "{}", gw.log());
    assert!(
        gw.log().contains("truncated") || gw.log().contains("at disconnect"),
        "{}",
        gw.log()
    );
    let (_, sent) = ingest(fleet.dir.path(), "sent", &pkts);
    assert_eq!(
        canon(stored_frames(&store).into_iter().map(|(_, f)| f)),
        canon(sent)
    );
}

#[test]
fn an_unknown_vin_gets_the_failure_response_and_nothing_is_stored() {
    let fleet = fleet(4, 3);
    let vehicles = by_vin(&fleet.packets);
    let mut vins = vehicles
        .iter()
        .filter(|(_, p)| p.iter().any(|p| p.command == command::REALTIME))
        .map(|(v, _)| v);
    let (known, unknown) = (vins.next().unwrap().clone(), vins.next().unwrap().clone());
    let registry = fleet.dir.path().join("registry.txt");
    std::fs::write(&registry, format!("# allowed\n{known}\n\n")).unwrap();
    let store = fleet.dir.path().join("store");
    let mut gw = Gateway::start(
        &store,
        &["--registry", p(&registry), "--admin", "127.0.0.1:0"],
    );

    let mut c = Client::connect(gw.addr);
    let login = &vehicles[&unknown][0];
    assert_eq!(login.command, command::VEHICLE_LOGIN);
    c.send(&login.bytes, 4096);
    c.wait_replies(1);
    assert_eq!(c.replies, [(command::VEHICLE_LOGIN, response::ERROR)]);
    // Its reports are refused unanswered; a heartbeat still is answered.
    for p in &vehicles[&unknown][1..] {
        c.send(&p.bytes, 4096);
    }
    c.send(&encode::heartbeat(Edition::V2016, &unknown).unwrap(), 4096);
    c.wait_replies(2);
    assert_eq!(c.replies[1], (command::HEARTBEAT, response::SUCCESS));
    // The 2025 edition says "VIN unknown".
    let login25 =
        encode::vehicle_login(Edition::V2025, &unknown, 1_741_562_400_000, 1, "ICCID", &[])
            .unwrap();
    c.send(&login25, 4096);
    c.wait_replies(3);
    assert_eq!(
        c.replies[2],
        (command::VEHICLE_LOGIN, response::VIN_UNKNOWN)
    );

    let mut k = Client::connect(gw.addr);
    let bytes: Vec<u8> = vehicles[&known]
        .iter()
        .flat_map(|p| p.bytes.clone())
        .collect();
    k.send(&bytes, 4096);
    k.wait_replies(vehicles[&known].len());
    assert!(k.replies.iter().all(|r| r.1 == response::SUCCESS));
    let m = gw.metrics();
    assert_eq!(
        metric(&m, "bms_gateway_refused_total{kind=\"unknown-vin\"}"),
        2,
        "{m}"
    );
    drop((c, k));
    assert!(gw.stop().success(), "{}", gw.log());
    let stored = stored_frames(&store);
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|(_, f)| f.vin == known));
    let (_, sent) = ingest(fleet.dir.path(), "known", &vehicles[&known]);
    assert_eq!(canon(stored.into_iter().map(|(_, f)| f)), canon(sent));
}

#[test]
fn idle_connections_are_closed_and_the_connection_limit_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut gw = Gateway::start(
        &store,
        &[
            "--idle-timeout",
            "1",
            "--max-connections",
            "1",
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let vin = "LSPECEXAMPLE00001";
    let t = Instant::now();
    let mut c = Client::connect(gw.addr);
    c.send(&encode::heartbeat(Edition::V2016, vin).unwrap(), 100);
    c.wait_replies(1);
    // A second connection while the first is open: closed at once.
    let mut extra = Client::connect(gw.addr);
    extra.expect_closed();
    // The first, silent, is closed after about a second.
    c.expect_closed();
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    let m = gw.metrics();
    assert_eq!(
        metric(&m, "bms_gateway_connections_idle_closed_total"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "bms_gateway_connections_rejected_total"),
        1,
        "{m}"
    );
    assert!(gw.stop().success(), "{}", gw.log());
}

#[test]
fn a_failed_journal_write_is_not_acknowledged() {
    let fleet = fleet(1, 2);
    let pkts: Vec<&Pkt> = fleet.packets.iter().collect();
    let store = fleet.dir.path().join("store");
    // Every append past the first report fails.
    let limit = pkts[1].bytes.len().to_string();
    let login_and_one: Vec<u8> = pkts[..2].iter().flat_map(|p| p.bytes.clone()).collect();
    let mut gw = Gateway::start_env(
        &store,
        &[],
        &[("BMS_TEST_JOURNAL_FAIL_AFTER_BYTES", &limit)],
    );
    let mut c = Client::connect(gw.addr);
    c.send(&login_and_one, 4096);
    c.wait_replies(2);
    c.send(&pkts[2].bytes, 4096);
    c.send(
        &encode::heartbeat(Edition::V2016, &pkts[0].vin).unwrap(),
        4096,
    );
    c.wait_replies(3);
    // The report after the failure got no reply; the heartbeat did.
    assert_eq!(c.replies[2], (command::HEARTBEAT, response::SUCCESS));
    drop(c);
    assert!(gw.stop().success(), "{}", gw.log());
    let stored = stored_frames(&store);
    assert_eq!(stored.len(), 1);
    let (_, sent) = ingest(fleet.dir.path(), "one", &pkts[..2]);
    assert_eq!(canon(stored.into_iter().map(|(_, f)| f)), canon(sent));
}

#[test]
fn frames_acknowledged_before_a_crash_are_recovered_at_the_next_start() {
    let fleet = fleet(1, 3);
    let pkts: Vec<&Pkt> = fleet.packets.iter().collect();
    let store = fleet.dir.path().join("store");
    let mut gw = Gateway::start(&store, &[]);
    let mut c = Client::connect(gw.addr);
    let bytes: Vec<u8> = pkts.iter().flat_map(|p| p.bytes.clone()).collect();
    c.send(&bytes, 4096);
    c.wait_replies(pkts.len());
    // SIGKILL: no flush. Every acknowledged frame is in the journal.
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    assert!(stored_frames(&store).is_empty());
    let mut gw = Gateway::start(&store, &[]);
    assert!(gw.stop().success(), "{}", gw.log());
    assert!(gw.log().contains("recovered"), "{}", gw.log());
    let (_, sent) = ingest(fleet.dir.path(), "sent", &pkts);
    assert_eq!(
        canon(stored_frames(&store).into_iter().map(|(_, f)| f)),
        canon(sent)
    );
    assert!(!store.join("journal").read_dir().unwrap().any(|_| true));
}

#[test]
fn help_explains_the_gateway() {
    let out = common::bms(&["gateway", "--help"]);
    assert!(out.status.success());
    let h = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--model",
        "--store",
        "--admin",
        "--registry",
        "--max-connections",
        "--idle-timeout",
        "--utc-offset",
        "--tls-cert",
        "--tls-key",
        "--platform-credentials",
        "--max-packet-bytes",
        "--max-packets-per-sec",
        "--flush-secs",
    ] {
        assert!(h.contains(flag), "gateway --help lacks {flag}");
    }
    assert!(h.contains("fsynced"), "{h}");
    let out = common::bms(&["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("gateway"));
}

/// Reads from `r` until `n` replies in all are in `replies` (fails after the read timeout).
fn read_replies(r: &mut impl Read, d: &mut Decoder, replies: &mut Vec<(u8, u8)>, n: usize) {
    let mut buf = [0u8; 4096];
    while replies.len() < n {
        let k = r
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("after {} of {n} replies: {e}", replies.len()));
        assert!(k > 0, "closed after {} of {n} replies", replies.len());
        d.push(&buf[..k]);
        while let Some(e) = d.next() {
            match e {
                Event::Packet(info) => {
                    assert!(!info.is_command(), "{info:?}");
                    replies.push((info.command, info.response));
                }
                other => panic!("not a reply: {other:?}"),
            }
        }
    }
}

/// Reads `r` to its end (EOF or reset) and returns the GB/T 32960 replies in the bytes.
fn replies_until_closed(r: &mut impl Read) -> Vec<(u8, u8)> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => bytes.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("not closed: {e}"),
        }
    }
    let mut d = Decoder::new();
    d.push(&bytes);
    let mut out = Vec::new();
    while let Some(e) = d.next() {
        if let Event::Packet(info) = e {
            out.push((info.command, info.response));
        }
    }
    out
}

#[test]
fn over_tls_every_frame_is_acknowledged_and_stored_and_plain_tcp_is_refused() {
    let fleet = fleet(1, 2);
    let (cert, key) = self_signed(fleet.dir.path());
    let store = fleet.dir.path().join("store");
    let mut gw = Gateway::start(
        &store,
        &[
            "--tls-cert",
            p(&cert),
            "--tls-key",
            p(&key),
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let pkts: Vec<&Pkt> = fleet.packets.iter().collect();
    let bytes: Vec<u8> = pkts.iter().flat_map(|p| p.bytes.clone()).collect();
    let mut s = tls_client(gw.addr, &cert);
    for c in bytes.chunks(1000) {
        s.write_all(c).unwrap();
    }
    let (mut d, mut replies) = (Decoder::new(), Vec::new());
    read_replies(&mut s, &mut d, &mut replies, pkts.len());
    assert!(
        replies.iter().all(|r| r.1 == response::SUCCESS),
        "{replies:?}"
    );

    // The same packets in plain TCP: no reply, the connection closed.
    let mut plain = TcpStream::connect(gw.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(&pkts[0].bytes).unwrap();
    assert_eq!(replies_until_closed(&mut plain), []);
    let m = gw.metrics();
    assert_eq!(
        metric(&m, "bms_gateway_refused_total{kind=\"tls-handshake\"}"),
        1,
        "{m}"
    );
    drop(s);
    assert!(gw.stop().success(), "{}", gw.log());
    assert!(gw.log().contains("TLS handshake failed"), "{}", gw.log());
    let (_, sent) = ingest(fleet.dir.path(), "sent", &pkts);
    assert_eq!(
        canon(stored_frames(&store).into_iter().map(|(_, f)| f)),
        canon(sent)
    );
}

#[test]
fn tls_files_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key\n").unwrap();
    let store = dir.path().join("store");
    let model = model_path();
    let run = |args: &[&str]| {
        let mut all = vec!["gateway", "--listen", "127.0.0.1:0", "--model", p(&model)];
        all.extend(["--store", p(&store)]);
        all.extend(args);
        common::bms(&all)
    };
    for (args, want) in [
        (
            vec!["--tls-cert", p(&cert), "--tls-key", p(&junk)],
            "--tls-key",
        ),
        (
            vec!["--tls-cert", p(&junk), "--tls-key", p(&key)],
            "--tls-cert",
        ),
        (vec!["--tls-cert", p(&cert)], "--tls-key"),
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

const PLATFORM: &str = "PLATFORM000000001";
const T0: i64 = 1_741_562_400_000;

#[test]
fn platform_logins_are_checked_against_the_credentials_and_passwords_never_logged() {
    let fleet = fleet(1, 1);
    let creds = fleet.dir.path().join("platforms.txt");
    std::fs::write(&creds, "# forwarding platforms\nfwd01:s3cret-pass\n").unwrap();
    let store = fleet.dir.path().join("store");
    let mut gw = Gateway::start(
        &store,
        &[
            "--platform-credentials",
            p(&creds),
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let login = |pass: &str| {
        encode::platform_login(Edition::V2016, PLATFORM, T0, 1, "fwd01", pass, 1).unwrap()
    };
    // The right password: answered 01, then the vehicles it forwards are served.
    let mut c = Client::connect(gw.addr);
    c.send(&login("s3cret-pass"), 4096);
    c.wait_replies(1);
    assert_eq!(c.replies, [(command::PLATFORM_LOGIN, response::SUCCESS)]);
    let n = fleet.packets.len();
    let bytes: Vec<u8> = fleet.packets.iter().flat_map(|p| p.bytes.clone()).collect();
    c.send(&bytes, 4096);
    c.send(
        &encode::platform_logout(Edition::V2016, PLATFORM, T0, 1).unwrap(),
        4096,
    );
    c.wait_replies(n + 2);
    assert!(c.replies.iter().all(|r| r.1 == response::SUCCESS));
    assert_eq!(c.replies[n + 1].0, command::PLATFORM_LOGOUT);

    // A wrong password: answered 02, the rest of the read refused, the connection closed.
    let mut w = Client::connect(gw.addr);
    let mut bytes = login("guess-pass");
    bytes.extend(encode::heartbeat(Edition::V2016, PLATFORM).unwrap());
    w.send(&bytes, 4096);
    assert_eq!(
        replies_until_closed(&mut w.s),
        [(command::PLATFORM_LOGIN, response::ERROR)]
    );
    let m = gw.metrics();
    assert_eq!(
        metric(&m, "bms_gateway_refused_total{kind=\"bad-credentials\"}"),
        1,
        "{m}"
    );
    drop(c);
    assert!(gw.stop().success(), "{}", gw.log());
    let log = gw.log();
    assert!(log.contains("\"fwd01\""), "{log}");
    assert!(
        !log.contains("s3cret") && !log.contains("guess-pass"),
        "{log}"
    );

    // Without --platform-credentials a platform login is refused unanswered.
    let store2 = fleet.dir.path().join("store2");
    let mut gw = Gateway::start(&store2, &["--admin", "127.0.0.1:0"]);
    let mut c = Client::connect(gw.addr);
    let mut bytes = login("s3cret-pass");
    bytes.extend(encode::heartbeat(Edition::V2016, PLATFORM).unwrap());
    c.send(&bytes, 4096);
    c.wait_replies(1);
    assert_eq!(c.replies, [(command::HEARTBEAT, response::SUCCESS)]);
    let m = gw.metrics();
    assert_eq!(
        metric(&m, "bms_gateway_refused_total{kind=\"unsupported\"}"),
        1,
        "{m}"
    );
    drop(c);
    assert!(gw.stop().success(), "{}", gw.log());
}

#[test]
fn a_connection_past_its_packet_rate_is_refused_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut gw = Gateway::start(
        &store,
        &["--max-packets-per-sec", "5", "--admin", "127.0.0.1:0"],
    );
    let vin = "LSPECEXAMPLE00001";
    let beat = encode::heartbeat(Edition::V2016, vin).unwrap();
    // 20 at once: the budget holds one second's worth, 5.
    let mut c = Client::connect(gw.addr);
    c.send(&beat.repeat(20), 4096);
    let got = replies_until_closed(&mut c.s);
    assert_eq!(got, vec![(command::HEARTBEAT, response::SUCCESS); 5]);
    let m = gw.metrics();
    assert_eq!(
        metric(&m, "bms_gateway_refused_total{kind=\"rate-limited\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "bms_gateway_refused_total{kind=\"closing\"}"),
        14,
        "{m}"
    );
    // Within the rate (one every 250 ms), a connection is served without end.
    let mut c = Client::connect(gw.addr);
    for i in 0..8 {
        c.send(&beat, 4096);
        c.wait_replies(i + 1);
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(c);
    assert!(gw.stop().success(), "{}", gw.log());
    assert!(gw.log().contains("more than 5 packets/s"), "{}", gw.log());
}

#[test]
fn a_packet_longer_than_the_limit_is_refused_unanswered() {
    let fleet = fleet(1, 1);
    let login = fleet
        .packets
        .iter()
        .find(|p| p.command == command::VEHICLE_LOGIN)
        .unwrap();
    let report = fleet
        .packets
        .iter()
        .find(|p| p.command == command::REALTIME)
        .unwrap();
    let limit = report.bytes.len() - 1;
    assert!(login.bytes.len() <= limit);
    let store = fleet.dir.path().join("store");
    let mut gw = Gateway::start(
        &store,
        &[
            "--max-packet-bytes",
            &limit.to_string(),
            "--admin",
            "127.0.0.1:0",
        ],
    );
    let mut c = Client::connect(gw.addr);
    let mut bytes = login.bytes.clone();
    bytes.extend(&report.bytes);
    bytes.extend(encode::heartbeat(Edition::V2016, &login.vin).unwrap());
    c.send(&bytes, 4096);
    c.wait_replies(2);
    assert_eq!(
        c.replies,
        [
            (command::VEHICLE_LOGIN, response::SUCCESS),
            (command::HEARTBEAT, response::SUCCESS)
        ]
    );
    let m = gw.metrics();
    assert_eq!(
        metric(&m, "bms_gateway_refused_total{kind=\"too-large\"}"),
        1,
        "{m}"
    );
    drop(c);
    assert!(gw.stop().success(), "{}", gw.log());
    assert!(
        gw.log().contains("longer than --max-packet-bytes"),
        "{}",
        gw.log()
    );
    assert!(stored_frames(&store).is_empty());
    let out = common::bms(&[
        "gateway",
        "--model",
        p(&model_path()),
        "--store",
        p(&store),
        "--max-packet-bytes",
        "24",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-packet-bytes 24"));
}

#[test]
fn with_flush_secs_the_frames_store_fills_while_serving_without_duplicates() {
    let fleet = fleet(1, 2);
    let pkts: Vec<&Pkt> = fleet
        .packets
        .iter()
        .filter(|p| p.command != command::VEHICLE_LOGOUT)
        .collect();
    let half = pkts.len() / 2;
    let store = fleet.dir.path().join("store");
    let mut gw = Gateway::start(&store, &["--flush-secs", "0.3", "--admin", "127.0.0.1:0"]);
    let mut c = Client::connect(gw.addr);
    let first: Vec<u8> = pkts[..half].iter().flat_map(|p| p.bytes.clone()).collect();
    c.send(&first, 4096);
    c.wait_replies(half);
    let (_, sent_first) = ingest(fleet.dir.path(), "first", &pkts[..half]);
    // The frames store holds the first half while the gateway still runs.
    let t = Instant::now();
    while metric(&gw.metrics(), "bms_gateway_frames_flushed_total") < sent_first.len() as u64 {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", gw.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        canon(stored_frames(&store).into_iter().map(|(_, f)| f)),
        canon(sent_first)
    );
    let rest: Vec<u8> = pkts[half..].iter().flat_map(|p| p.bytes.clone()).collect();
    c.send(&rest, 4096);
    c.wait_replies(pkts.len());
    drop(c);
    assert!(gw.stop().success(), "{}", gw.log());
    let (_, sent) = ingest(fleet.dir.path(), "sent", &pkts);
    assert_eq!(
        canon(stored_frames(&store).into_iter().map(|(_, f)| f)),
        canon(sent)
    );
    let left = std::fs::read_dir(store.join("journal")).unwrap().count();
    assert_eq!(left, 0, "journal segments left after a graceful stop");
}
