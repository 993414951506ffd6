//! `bms serve` end to end: the real binary on an ephemeral loopback port, driven by a
//! small hand-written HTTP/1.1 client. Probabilities are compared with `bms predict` on
//! the same rows of a simulated fleet.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{ok, p};

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ref14x6.onnx")
}

/// A running `bms serve`; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::start_with(
            Command::new(env!("CARGO_BIN_EXE_bms")).arg("serve"),
            args,
            &[],
        )
    }

    fn start_with(cmd: &mut Command, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut has_model = args.contains(&"--model") || args.contains(&"--model-dir");
        has_model |= env.iter().any(|(k, _)| *k == "BMS_MODEL_DIR");
        let model = model_path();
        if !has_model {
            cmd.args(["--model", p(&model)]);
        }
        cmd.args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env_remove("SAGEMAKER_BIND_TO_PORT")
            .env_remove("SAGEMAKER_MAX_PAYLOAD_IN_MB")
            .env_remove("SAGEMAKER_BATCH")
            .env_remove("BMS_MODEL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start bms serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    // Logged before the address is handed over: a test that reads the
                    // log right after start sees the line.
                    let mut l = sink.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(a) = line.split("listening on ").nth(1) {
                    let a = a
                        .trim_start_matches("http://")
                        .trim_start_matches("https://");
                    let _ = tx.send(a.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not start: {}", log.lock().unwrap());
            }
        };
        Server { child, addr, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn sigterm(&self) {
        // The shell's built-in `kill`: no dependency on procps.
        let st = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the process to exit; its exit status.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t.elapsed() < limit, "server did not exit: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn head(method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    req.into_bytes()
}

/// Reads one response (the server closes the connection after it).
fn read_response(s: &mut impl Read) -> Resp {
    let mut raw = Vec::new();
    // A server that answers before reading the whole body (413) may reset the
    // connection after its answer: keep what arrived.
    if let Err(e) = s.read_to_end(&mut raw) {
        assert!(!raw.is_empty(), "read response: {e}");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let headtext = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = headtext.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let body = raw[split + 4..].to_vec();
    if let Some(len) = headers.get("content-length") {
        assert_eq!(body.len(), len.parse::<usize>().unwrap(), "body length");
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = connect(addr);
    s.write_all(&head(method, path, headers, body.len()))
        .unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Resp {
    request(addr, "POST", path, &[("Content-Type", content_type)], body)
}

/// Reference batch lines of a small simulated fleet and `bms predict`'s answer for them:
/// (`VIN,Date,f1..f84` lines, `vin,date,predicted_prob,alarm` lines). Made once.
fn fleet() -> &'static (Vec<String>, Vec<String>) {
    static FLEET: OnceLock<(Vec<String>, Vec<String>)> = OnceLock::new();
    FLEET.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (daily, batch) = (dir.path().join("daily.csv"), dir.path().join("batch.csv"));
        ok(&[
            "simulate",
            "--vehicles",
            "12",
            "--days",
            "45",
            "--seed",
            "11",
            "--daily",
            p(&daily),
        ]);
        ok(&["windows", "-i", p(&daily), "-o", p(&batch)]);
        let out = ok(&["predict", "-m", p(&model_path()), "-i", p(&batch)]);
        let batch: Vec<String> = std::fs::read_to_string(&batch)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let preds: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect();
        assert_eq!(batch.len(), preds.len());
        assert!(batch.len() > 300, "{} windows", batch.len());
        (batch, preds)
    })
}

/// The features of a reference batch line (drops VIN and Date).
fn features(line: &str) -> &str {
    let mut it = line.splitn(3, ',');
    it.next();
    it.next();
    it.next().unwrap()
}

fn prob(pred_line: &str) -> &str {
    pred_line.split(',').nth(2).unwrap()
}

#[test]
fn ping_execution_parameters_routes_and_methods() {
    let s = Server::start_with(
        Command::new(env!("CARGO_BIN_EXE_bms")).arg("serve"),
        &["--workers", "3"],
        &[("SAGEMAKER_MAX_PAYLOAD_IN_MB", "12")],
    );
    let r = get(s.addr, "/ping");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    let r = get(s.addr, "/execution-parameters");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 12})
    );

    let r = get(s.addr, "/nope");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("/invocations"), "{}", r.text());
    let r = post(s.addr, "/ping", "text/csv", b"");
    assert_eq!(r.status, 405);
    let r = get(s.addr, "/invocations");
    assert_eq!(r.status, 405);
    let r = get(s.addr, "/v1/predict");
    assert_eq!(r.status, 405);
}

#[test]
fn invocations_csv_and_json_equal_bms_predict() {
    let (batch, preds) = fleet();
    let s = Server::start(&[]);
    let want: Vec<&str> = preds.iter().map(|l| prob(l)).collect();

    // Many lines, CRLF, trailing newline: one probability per line, the same digits as
    // `bms predict` writes.
    let body: String = batch
        .iter()
        .map(|l| format!("{}\r\n", features(l)))
        .collect();
    let r = post(s.addr, "/invocations", "text/csv", body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/csv"));
    let text = r.text();
    assert!(text.ends_with('\n'));
    assert_eq!(text.lines().collect::<Vec<_>>(), want);

    // The reference batch lines themselves (VIN, Date, features), no trailing newline,
    // Content-Type with a charset, answered in JSON.
    let body = batch[..50].join("\n");
    let r = request(
        s.addr,
        "POST",
        "/invocations",
        &[
            ("Content-Type", "text/csv; charset=utf-8"),
            ("Accept", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let got: Vec<f32> = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let want50: Vec<f32> = want[..50].iter().map(|x| x.parse().unwrap()).collect();
    assert_eq!(got, want50);

    // JSON in: {"instances": [[...]]} and a bare list of lists; CSV out by default.
    let rows: Vec<Vec<f64>> = batch[..40]
        .iter()
        .map(|l| features(l).split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    for body in [
        serde_json::json!({ "instances": rows }).to_string(),
        serde_json::json!(rows).to_string(),
    ] {
        let r = post(s.addr, "/invocations", "application/json", body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text().lines().collect::<Vec<_>>(), &want[..40]);
    }
    assert!(s.log().contains("listening on"));
}

#[test]
fn invocations_errors_and_hostile_input_never_kill_the_server() {
    let (batch, _) = fleet();
    let s = Server::start(&["--max-payload-mb", "1"]);
    let line = features(&batch[0]);

    // Custom attributes are echoed, on success and on error.
    let r = request(
        s.addr,
        "POST",
        "/invocations",
        &[
            ("Content-Type", "text/csv"),
            ("X-Amzn-SageMaker-Custom-Attributes", "trace=42"),
        ],
        line.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-amzn-sagemaker-custom-attributes"),
        Some("trace=42")
    );
    let r = request(
        s.addr,
        "POST",
        "/invocations",
        &[
            ("Content-Type", "text/csv"),
            ("X-Amzn-SageMaker-Custom-Attributes", "a"),
        ],
        b"1,2\n",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-amzn-sagemaker-custom-attributes"), Some("a"));

    // Empty body (and only blank lines): 204.
    assert_eq!(post(s.addr, "/invocations", "text/csv", b"").status, 204);
    assert_eq!(
        post(s.addr, "/invocations", "text/csv", b"\r\n\n").status,
        204
    );

    // Unsupported Accept: 406; unsupported Content-Type: 415.
    let r = request(
        s.addr,
        "POST",
        "/invocations",
        &[
            ("Content-Type", "text/csv"),
            ("Accept", "application/x-protobuf"),
        ],
        line.as_bytes(),
    );
    assert_eq!(r.status, 406, "{}", r.text());
    let r = post(
        s.addr,
        "/invocations",
        "application/x-recordio-protobuf",
        line.as_bytes(),
    );
    assert_eq!(r.status, 415);
    assert!(
        r.text().contains("application/x-recordio-protobuf"),
        "{}",
        r.text()
    );

    // Unparsable input: 400 naming the line (and column).
    let with_field = |i: usize, v: &str| {
        let mut f: Vec<&str> = line.split(',').collect();
        f[i] = v;
        f.join(",")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{line}\n{line}\n1,2,3\n"),
            "line 3: expected 84 values",
        ),
        (
            format!("{line}\n{line},7\n"),
            "line 2: expected 84 values (or VIN, Date and 84 values), found 85 fields",
        ),
        (
            format!("{line}\n\n{}", with_field(1, "inf")),
            "line 3, column 2: 'inf' is not a finite number",
        ),
        (
            format!("{}\n", with_field(1, "1e999")),
            "line 1, column 2: '1e999' is not a finite number",
        ),
        (
            // Quotes are CSV quoting, undone as `bms predict` undoes them.
            format!("{}\n", with_field(83, "\"x\"")),
            "line 1, column 84: 'x' is not a number",
        ),
    ];
    for (body, needle) in cases {
        let r = post(s.addr, "/invocations", "text/csv", body.as_bytes());
        assert_eq!(r.status, 400, "{needle}: {}", r.text());
        assert!(
            r.text().contains(needle),
            "wanted {needle:?} in {:?}",
            r.text()
        );
    }
    // `nan` strings and empty fields are missing values; huge finite numbers are numbers.
    let nan_line = line
        .split(',')
        .enumerate()
        .map(|(i, v)| match i % 3 {
            0 => "nan",
            1 => "",
            _ => v,
        })
        .collect::<Vec<_>>()
        .join(",");
    let huge_line = line
        .split(',')
        .map(|_| "3.4e38")
        .collect::<Vec<_>>()
        .join(",");
    let r = post(
        s.addr,
        "/invocations",
        "text/csv",
        format!("{nan_line}\n{huge_line}\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().lines().count(), 2);
    for p in r.text().lines() {
        let p: f32 = p.parse().unwrap();
        assert!((0.0..=1.0).contains(&p));
    }
    // Beyond f32 (what the model reads) is refused like an infinity (SPEC §4).
    let r = post(
        s.addr,
        "/invocations",
        "text/csv",
        format!("{nan_line}\n{}\n", huge_line.replace("3.4e38", "1e300")).as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("line 2, column 1: '1e300' is beyond"),
        "{}",
        r.text()
    );

    // Binary garbage and malformed JSON.
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert_eq!(
        post(s.addr, "/invocations", "text/csv", &garbage).status,
        400
    );
    let r = post(s.addr, "/invocations", "application/json", &garbage);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("invalid JSON"), "{}", r.text());
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let r = post(s.addr, "/invocations", "application/json", deep.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    let long_line = vec![b'9'; 900_000];
    let r = post(s.addr, "/invocations", "text/csv", &long_line);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("line 1: expected 84 values"),
        "{}",
        r.text()
    );
    let nul = line.replace(',', ",\0");
    assert_eq!(
        post(s.addr, "/invocations", "text/csv", nul.as_bytes()).status,
        400
    );
    let r = post(
        s.addr,
        "/invocations",
        "application/json",
        b"{\"instances\": [[1, 2], [3]]",
    );
    assert_eq!(r.status, 400);
    let r = post(
        s.addr,
        "/invocations",
        "application/json",
        b"{\"instances\": [[1, 2]]}",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("instance 1: expected 84 values, found 2"),
        "{}",
        r.text()
    );

    // Over the body limit (1 MiB here): 413, announced or streamed.
    // Announced: answered from the head, before any body is sent.
    let mut c = connect(s.addr);
    c.write_all(&head(
        "POST",
        "/invocations",
        &[("Content-Type", "text/csv")],
        1024 * 1024 + 1,
    ))
    .unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 413);
    assert!(
        r.text().contains("larger than the limit of 1048576 bytes"),
        "{}",
        r.text()
    );
    let mut c = connect(s.addr);
    c.write_all(b"POST /invocations HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    for _ in 0..17 {
        let chunk = vec![b'2'; 65536];
        let _ = c.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = c.write_all(&chunk);
        let _ = c.write_all(b"\r\n");
    }
    let _ = c.write_all(b"0\r\n\r\n");
    assert_eq!(read_response(&mut c).status, 413);

    // Still alive and still right.
    assert_eq!(get(s.addr, "/ping").status, 200);
    let r = post(s.addr, "/invocations", "text/csv", line.as_bytes());
    assert_eq!(r.status, 200);
}

#[test]
fn v1_predict_is_the_reference_gateway_api() {
    let (batch, preds) = fleet();
    let s = Server::start(&[]);
    for (line, pred) in batch.iter().zip(preds).step_by(37) {
        let f: Vec<&str> = line.splitn(3, ',').collect();
        let want: Vec<&str> = pred.split(',').collect();
        let as_string = serde_json::json!({"vin": f[0], "date": f[1], "features": f[2]});
        let values: Vec<f64> = f[2].split(',').map(|v| v.parse().unwrap()).collect();
        let as_array = serde_json::json!({"vin": f[0], "date": f[1], "features": values});
        for body in [as_string, as_array] {
            let r = post(
                s.addr,
                "/v1/predict",
                "application/json",
                body.to_string().as_bytes(),
            );
            assert_eq!(r.status, 200, "{}", r.text());
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["vin"], want[0]);
            assert_eq!(v["date"], want[1]);
            assert_eq!(
                v["predicted_prob"].as_f64().unwrap() as f32,
                want[2].parse::<f32>().unwrap()
            );
            assert_eq!(v["alarm"], want[3] == "1");
            assert_eq!(v["model_id"], "consistency-ref14x6-v1");
        }
    }
    // Errors are JSON and name the field.
    for (body, needle) in [
        (
            r#"{"vin": "V", "date": "2024-01-01"}"#.to_owned(),
            "missing field \\\"features\\\"",
        ),
        (
            r#"{"vin": "V", "date": "01/02/2024", "features": "1"}"#.to_owned(),
            "is not a YYYY-MM-DD date",
        ),
        (
            r#"{"vin": "V", "date": "2024-01-01", "features": "1,2"}"#.to_owned(),
            "expected 84 comma-separated values, found 2",
        ),
        ("[1, 2]".to_owned(), "expected an object"),
        ("\u{1}\u{2}".to_owned(), "invalid JSON"),
    ] {
        let r = post(s.addr, "/v1/predict", "application/json", body.as_bytes());
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            r.text().contains(needle),
            "wanted {needle:?} in {}",
            r.text()
        );
    }
}

#[test]
fn metrics_count_requests_errors_latency_and_rows() {
    let (batch, _) = fleet();
    let s = Server::start(&[]);
    let body: String = batch[..25]
        .iter()
        .map(|l| format!("{}\n", features(l)))
        .collect();
    for _ in 0..3 {
        assert_eq!(
            post(s.addr, "/invocations", "text/csv", body.as_bytes()).status,
            200
        );
    }
    assert_eq!(
        post(s.addr, "/invocations", "text/csv", b"1,2\n").status,
        400
    );
    assert_eq!(get(s.addr, "/ping").status, 200);
    let m = get(s.addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("bms_requests_total{route=\"/invocations\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        value("bms_requests_total{route=\"/invocations\",status=\"400\"}"),
        1.0
    );
    assert_eq!(
        value("bms_request_errors_total{route=\"/invocations\",status=\"400\"}"),
        1.0
    );
    assert_eq!(
        value("bms_requests_total{route=\"/ping\",status=\"200\"}"),
        1.0
    );
    assert_eq!(value("bms_rows_scored_total"), 75.0);
    assert_eq!(
        value("bms_request_duration_seconds_count{route=\"/invocations\"}"),
        4.0
    );
    assert_eq!(
        value("bms_request_duration_seconds_bucket{route=\"/invocations\",le=\"+Inf\"}"),
        4.0
    );
    assert!(value("bms_request_duration_seconds_sum{route=\"/invocations\"}") > 0.0);
    assert!(!text.contains("status=\"200\"} 0"));
    assert!(!text.contains("bms_request_errors_total{route=\"/ping\""));
}

#[test]
fn many_parallel_clients_get_bms_predict_answers() {
    let (batch, preds) = fleet();
    // Bodies on both sides of the inline limit: small ones scored inline when alone,
    // everything else on the worker pool.
    let s = Server::start(&["--inline-max-bytes", "4000", "--max-inflight", "256"]);
    let addr = s.addr;
    let batch = Arc::new(batch.clone());
    let preds = Arc::new(preds.clone());
    let threads: Vec<_> = (0..24)
        .map(|t| {
            let (batch, preds) = (batch.clone(), preds.clone());
            std::thread::spawn(move || {
                for k in 0..12 {
                    // Request k of thread t scores rows [start, start + len).
                    let len = 1 + (t * 7 + k * 13) % 40;
                    let start = (t * 31 + k * 17) % (batch.len() - len);
                    let body: String = batch[start..start + len]
                        .iter()
                        .map(|l| format!("{}\n", features(l)))
                        .collect();
                    let r = post(addr, "/invocations", "text/csv", body.as_bytes());
                    assert_eq!(r.status, 200, "{}", r.text());
                    let want: Vec<&str> =
                        preds[start..start + len].iter().map(|l| prob(l)).collect();
                    assert_eq!(r.text().lines().collect::<Vec<_>>(), want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn saturation_answers_429_instead_of_queueing() {
    let (batch, _) = fleet();
    let s = Server::start(&["--max-inflight", "1"]);
    let line = features(&batch[0]);
    // Admitted, then stalls before sending its body: holds the only permit.
    let mut slow = connect(s.addr);
    slow.write_all(&head(
        "POST",
        "/invocations",
        &[("Content-Type", "text/csv")],
        line.len(),
    ))
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let r = post(s.addr, "/invocations", "text/csv", line.as_bytes());
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    // Health checks are not scoring requests and still pass.
    assert_eq!(get(s.addr, "/ping").status, 200);
    slow.write_all(line.as_bytes()).unwrap();
    assert_eq!(read_response(&mut slow).status, 200);
    assert_eq!(
        post(s.addr, "/invocations", "text/csv", line.as_bytes()).status,
        200
    );
}

#[test]
fn slow_body_times_out_with_408() {
    let s = Server::start(&["--timeout-secs", "0.5"]);
    let mut c = connect(s.addr);
    c.write_all(&head(
        "POST",
        "/invocations",
        &[("Content-Type", "text/csv")],
        100,
    ))
    .unwrap();
    c.write_all(b"1,2").unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(get(s.addr, "/ping").status, 200);
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let (batch, preds) = fleet();
    let mut s = Server::start(&["--inline-max-bytes", "0"]);
    let body: String = batch.iter().map(|l| format!("{}\n", features(l))).collect();
    // Two requests in flight: headers and half of each body sent.
    let half = body.len() / 2;
    let mut conns: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = connect(s.addr);
            c.write_all(&head(
                "POST",
                "/invocations",
                &[("Content-Type", "text/csv")],
                body.len(),
            ))
            .unwrap();
            c.write_all(&body.as_bytes()[..half]).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    s.sigterm();
    // The server stops accepting new connections...
    let t = Instant::now();
    while TcpStream::connect(s.addr).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but answers the requests already in flight, in full.
    let want: Vec<&str> = preds.iter().map(|l| prob(l)).collect();
    for c in &mut conns {
        c.write_all(&body.as_bytes()[half..]).unwrap();
        let r = read_response(c);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text().lines().collect::<Vec<_>>(), want);
    }
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}: {}", s.log());
    assert!(s.log().contains("SIGTERM"), "{}", s.log());
}

#[test]
fn model_discovery_and_invoked_as_serve() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("model");
    std::fs::create_dir_all(models.join("nested")).unwrap();

    // No model at all: a clear error, not a server.
    let out = Command::new(env!("CARGO_BIN_EXE_bms"))
        .args(["serve", "--model-dir", p(&models), "--port", "0"])
        .env_remove("BMS_MODEL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("no .onnx file under"),
        "{}",
        common::stderr(&out)
    );

    // One model (in a subdirectory, as an unpacked archive may have it): served. The
    // binary linked as `serve` behaves like `bms serve`; the port comes from
    // SAGEMAKER_BIND_TO_PORT when --port is not given... here --port 0 for a free port.
    std::fs::copy(model_path(), models.join("nested/m.onnx")).unwrap();
    let link = dir.path().join("serve");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bms"), &link).unwrap();
    let s = Server::start_with(
        &mut Command::new(&link),
        &[],
        &[("BMS_MODEL_DIR", p(&models))],
    );
    assert_eq!(get(s.addr, "/ping").status, 200);
    assert!(s.log().contains("consistency-ref14x6-v1"), "{}", s.log());
    drop(s);

    // Two models: refused, naming both.
    std::fs::copy(model_path(), models.join("other.onnx")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bms"))
        .args(["serve", "--model-dir", p(&models), "--port", "0"])
        .env_remove("BMS_MODEL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(
        err.contains("2 .onnx files") && err.contains("other.onnx") && err.contains("m.onnx"),
        "{err}"
    );
}

#[test]
fn port_from_sagemaker_bind_to_port() {
    // A free port, found by binding and releasing it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bms"));
    cmd.args(["serve", "--model", p(&model_path()), "--host", "127.0.0.1"])
        .env("SAGEMAKER_BIND_TO_PORT", port.to_string())
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        listening.as_deref().and_then(|l| l.split("http://").nth(1)),
        Some(format!("127.0.0.1:{port}").as_str())
    );
}

#[test]
fn store_records_what_bms_predict_out_records_and_flushes_on_sigterm() {
    use bms_batch::store::{EVENTS_FILE, SQLITE_FILE, SqliteStore};
    let (batch, _) = fleet();
    let dir = tempfile::tempdir().unwrap();
    let (batch_file, out, store) = (
        dir.path().join("b.csv"),
        dir.path().join("out"),
        dir.path().join("store"),
    );
    std::fs::write(&batch_file, batch.join("\n") + "\n").unwrap();
    ok(&[
        "predict",
        "-m",
        p(&model_path()),
        "-i",
        p(&batch_file),
        "--out",
        p(&out),
    ]);
    let want = SqliteStore::open(&out.join(SQLITE_FILE))
        .unwrap()
        .all()
        .unwrap();
    assert_eq!(want.len(), batch.len());

    let mut s = Server::start(&["--store", p(&store), "--inline-max-bytes", "2000"]);
    // Half the lines keyed, in two requests, then all of them again (an upsert overwrites
    // the same event ids); feature-only lines and JSON instances have no key and are
    // scored, not stored; /v1/predict stores its one prediction.
    let half = batch.len() / 2;
    for chunk in [&batch[..half], &batch[half..], &batch[..]] {
        let r = post(
            s.addr,
            "/invocations",
            "text/csv",
            (chunk.join("\r\n") + "\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let unkeyed: String = batch[..10]
        .iter()
        .map(|l| format!("{}\n", features(l)))
        .collect();
    assert_eq!(
        post(s.addr, "/invocations", "text/csv", unkeyed.as_bytes()).status,
        200
    );
    let f: Vec<&str> = batch[3].splitn(3, ',').collect();
    let body = serde_json::json!({"vin": f[0], "date": f[1], "features": f[2]}).to_string();
    assert_eq!(
        post(s.addr, "/v1/predict", "application/json", body.as_bytes()).status,
        200
    );
    // SIGTERM right after the last answer: whatever is still queued must reach the disk.
    s.sigterm();
    assert!(
        s.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        s.log()
    );
    assert!(s.log().contains("store flushed"), "{}", s.log());

    let got = SqliteStore::open(&store.join(SQLITE_FILE))
        .unwrap()
        .all()
        .unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.event_id, w.event_id);
        assert_eq!((&g.vin, g.date, &g.model_id), (&w.vin, w.date, &w.model_id));
        assert_eq!(g.predicted_prob, w.predicted_prob, "{}", g.event_id);
        assert_eq!(g.alarm, w.alarm);
        assert_eq!(g.features, w.features);
    }
    // The event log is appended: every keyed prediction of every request, one line each,
    // in the same JSON as `bms predict --out` writes.
    let events = std::fs::read_to_string(store.join(EVENTS_FILE)).unwrap();
    assert_eq!(events.lines().count(), 2 * batch.len() + 1);
    let reference: HashMap<String, String> = std::fs::read_to_string(out.join(EVENTS_FILE))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["request_id"].as_str().unwrap().to_owned(), l.to_owned())
        })
        .collect();
    for line in events.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(reference[v["request_id"].as_str().unwrap()], line);
    }
}

/// SPEC §7: a body row with a missing value is a 400 naming row and value when the model
/// does not handle missing values (a logistic regression); the tree model scores it.
#[test]
fn missing_values_are_refused_for_a_model_that_does_not_handle_them() {
    let logreg = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/logreg_n.onnx");
    let s = Server::start(&["--model", p(&logreg)]);
    let (batch, _) = fleet();
    let row: Vec<&str> = features(&batch[0]).split(',').collect();
    let mut holed = row.clone();
    holed[4] = "nan";
    let body = format!("{}\n{}\n", row.join(","), holed.join(","));
    let r = post(s.addr, "/invocations", "text/csv", body.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("row 2, value 5: a missing value") && r.text().contains("MatMul"),
        "{}",
        r.text()
    );
    let json = format!(
        "[[{}], [{}]]",
        row.join(","),
        holed.join(",").replace("nan", "null")
    );
    let r = post(s.addr, "/invocations", "application/json", json.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("row 2, value 5"), "{}", r.text());
    let r = post(
        s.addr,
        "/invocations",
        "text/csv",
        format!("{}\n", row.join(",")).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let tree = Server::start(&[]);
    let r = post(tree.addr, "/invocations", "text/csv", body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().lines().count(), 2);
}

/// Issue 20 §3/§6: on a full disk `bms serve --store` kept answering 200 while most
/// predictions were never stored. Now a 200 is sent only after the prediction is
/// committed: the 200s are exactly the stored events, a failed write is a 503, `/ping`
/// says unhealthy until the store can write again, and events.jsonl holds no half line.
#[test]
fn a_full_disk_under_store_gives_503_and_no_acknowledged_prediction_is_lost() {
    use bms_batch::store::{EVENTS_FILE, SQLITE_FILE, SqliteStore};
    let fs = common::Tmpfs::mount("8m");
    let store = fs.dir.path().join("store");
    let mut s = Server::start(&["--store", p(&store)]);
    let (batch, _) = fleet();
    let f: Vec<&str> = batch[0].splitn(3, ',').collect();
    let body = |i: usize| {
        serde_json::json!({"vin": format!("DISKFULL{i:09}"), "date": f[1], "features": f[2]})
            .to_string()
    };
    let mut acked = std::collections::BTreeSet::new();
    let (mut refused, mut i) = (0, 0);
    while refused < 5 {
        assert!(i < 20_000, "the store never filled the tmpfs");
        let r = post(
            s.addr,
            "/v1/predict",
            "application/json",
            body(i).as_bytes(),
        );
        match r.status {
            200 => {
                acked.insert(format!("DISKFULL{i:09}"));
            }
            503 => {
                assert!(r.text().contains("not recorded"), "{}", r.text());
                refused += 1;
            }
            other => panic!("status {other}: {}", r.text()),
        }
        i += 1;
    }
    assert!(
        acked.len() > 50,
        "{} acknowledged before the disk filled",
        acked.len()
    );
    let ping = get(s.addr, "/ping");
    assert_eq!(ping.status, 503, "{}", ping.text());
    assert!(
        ping.text().contains("store cannot write"),
        "{}",
        ping.text()
    );

    // Room again: the next write succeeds and /ping is healthy again.
    fs.resize("64m");
    let r = post(
        s.addr,
        "/v1/predict",
        "application/json",
        body(i).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    acked.insert(format!("DISKFULL{i:09}"));
    assert_eq!(get(s.addr, "/ping").status, 200);
    s.sigterm();
    assert!(
        s.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        s.log()
    );

    let events = std::fs::read_to_string(store.join(EVENTS_FILE)).unwrap();
    let logged: std::collections::BTreeSet<String> = events
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON lines");
            v["vin"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(events.lines().count(), logged.len(), "no event twice");
    assert_eq!(
        logged, acked,
        "events.jsonl holds exactly the acknowledged predictions"
    );
    let rows: std::collections::BTreeSet<String> = SqliteStore::open(&store.join(SQLITE_FILE))
        .unwrap()
        .all()
        .unwrap()
        .into_iter()
        .map(|p| p.vin)
        .collect();
    assert!(
        rows.is_superset(&acked),
        "every acknowledged prediction is in results.sqlite"
    );
}

/// Issue 20 §3: the model file replaced (truncated in place, then renamed over by another
/// model) while `bms serve` answers: every request is answered with the loaded model's
/// probabilities — the server reads the file once, at start.
#[test]
fn replacing_the_model_file_while_serving_changes_no_answer() {
    let (batch, preds) = fleet();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(model_path(), &model).unwrap();
    let s = Server::start(&["--model", p(&model), "--max-inflight", "256"]);
    let addr = s.addr;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let batch = Arc::new(batch.clone());
    let preds = Arc::new(preds.clone());
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (batch, preds, stop) = (batch.clone(), preds.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answered = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || answered < 20 {
                    let start = (t * 37 + answered * 11) % (batch.len() - 10);
                    let body: String = batch[start..start + 10]
                        .iter()
                        .map(|l| format!("{}\n", features(l)))
                        .collect();
                    let r = post(addr, "/invocations", "text/csv", body.as_bytes());
                    assert_eq!(r.status, 200, "{}", r.text());
                    let want: Vec<&str> =
                        preds[start..start + 10].iter().map(|l| prob(l)).collect();
                    assert_eq!(r.text().lines().collect::<Vec<_>>(), want);
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // In place: truncated, then garbage.
    std::fs::write(&model, b"not a model any more").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Renamed over by a different model.
    let other = dir.path().join("other.onnx");
    let ext = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/consistency-ext.onnx");
    std::fs::copy(ext, &other).unwrap();
    std::fs::rename(&other, &model).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(answered >= 80, "{answered}");
    assert_eq!(get(addr, "/ping").status, 200);
}

/// Issue 20 §5: bearer tokens. /ping stays open (SageMaker's health check); every other
/// route without a valid token gets 401 with no detail; tokens from a file or
/// BMS_AUTH_TOKEN; no token is ever logged.
#[test]
fn bearer_tokens_guard_every_route_but_ping() {
    let dir = tempfile::tempdir().unwrap();
    let (t1, t2) = ("s3cr3t-token-0123456789", "another-token-abcdefghij");
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("# who may call\n{t1}\n\n  {t2}  \n")).unwrap();
    let (batch, preds) = fleet();
    let body = format!("{}\n", features(&batch[0]));
    let mut s = Server::start(&["--auth-token-file", p(&file)]);
    assert_eq!(get(s.addr, "/ping").status, 200);
    let call = |auth: Option<&str>, path: &str| {
        let h: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let mut h = h;
        h.push(("Content-Type", "text/csv"));
        request(s.addr, "POST", path, &h, body.as_bytes())
    };
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some(&format!("Basic {t1}")[..]),
        Some(&format!("Bearer {t1}x")[..]),
        Some(&format!("Bearer {}", &t1[..t1.len() - 1])[..]),
    ] {
        let r = call(auth, "/invocations");
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.text(), "unauthorized\n");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let r = request(s.addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 401);
    for t in [t1, t2] {
        let r = call(Some(&format!("Bearer {t}")), "/invocations");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text().trim(), prob(&preds[0]));
    }
    s.sigterm();
    assert!(s.wait_exit(Duration::from_secs(30)).success());
    let log = s.log();
    assert!(
        !log.contains(t1) && !log.contains(t2) && !log.contains("wrong-token"),
        "{log}"
    );

    let env = Server::start_with(
        Command::new(env!("CARGO_BIN_EXE_bms")).arg("serve"),
        &[],
        &[("BMS_AUTH_TOKEN", t2)],
    );
    let ok_auth = format!("Bearer {t2}");
    let h = [
        ("Authorization", ok_auth.as_str()),
        ("Content-Type", "text/csv"),
    ];
    assert_eq!(
        request(env.addr, "POST", "/invocations", &h, body.as_bytes()).status,
        200
    );
    assert_eq!(
        post(env.addr, "/invocations", "text/csv", body.as_bytes()).status,
        401
    );

    // A short token or an empty file is refused at start, naming the line, not the token.
    std::fs::write(&file, "short\n").unwrap();
    let o = common::bms(&[
        "serve",
        "--model",
        p(&model_path()),
        "--auth-token-file",
        p(&file),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("line 1") && !e.contains("short"), "{e}");
}

/// Issue 20 §5: `--tls-cert/--tls-key` serve HTTPS (rustls): a TLS client gets the same
/// answers; a plaintext client gets nothing and the server keeps serving.
#[test]
fn tls_serves_https_and_plaintext_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::self_signed(dir.path());
    let s = Server::start(&["--tls-cert", p(&cert), "--tls-key", p(&key)]);
    assert!(s.log().contains("listening on https://"), "{}", s.log());
    let (batch, preds) = fleet();
    let body = format!("{}\n{}\n", features(&batch[0]), features(&batch[1]));
    let tls_request = |path: &str, body: &[u8], method: &str| {
        let mut tls = common::tls_client(s.addr, &cert);
        tls.write_all(&head(
            method,
            path,
            &[("Content-Type", "text/csv")],
            body.len(),
        ))
        .unwrap();
        tls.write_all(body).unwrap();
        read_response(&mut tls)
    };
    let r = tls_request("/invocations", body.as_bytes(), "POST");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text().lines().collect::<Vec<_>>(),
        vec![prob(&preds[0]), prob(&preds[1])]
    );
    assert_eq!(tls_request("/ping", b"", "GET").status, 200);
    // Plaintext on the TLS port: no HTTP answer, the connection is closed.
    let mut plain = connect(s.addr);
    plain.write_all(&head("GET", "/ping", &[], 0)).unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(tls_request("/ping", b"", "GET").status, 200);
    let m = tls_request("/metrics", b"", "GET");
    assert!(
        m.text().contains("bms_tls_handshake_failures_total 1"),
        "{}",
        m.text()
    );
}

/// Issue 20 §5: the model directory search does not follow a symlink out of the
/// directory (a link to a model elsewhere, or to a directory holding one); a link that
/// stays inside is followed.
#[test]
fn model_discovery_does_not_follow_symlinks_out_of_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (models, elsewhere) = (dir.path().join("model"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(models.join("inner")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::copy(model_path(), elsewhere.join("m.onnx")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("m.onnx"), models.join("link.onnx")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, models.join("inner/dir")).unwrap();
    let o = common::bms(&["serve", "--model-dir", p(&models), "--port", "0"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("not followed") && e.contains("link.onnx") && e.contains("inner/dir"),
        "{e}"
    );
    // Inside: followed.
    std::fs::copy(model_path(), models.join("inner/real.onnx")).unwrap();
    std::os::unix::fs::symlink(models.join("inner"), models.join("alias")).unwrap();
    std::fs::remove_file(models.join("link.onnx")).unwrap();
    let o = common::bms(&["serve", "--model-dir", p(&models), "--port", "0"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("2 .onnx files") && e.contains("alias/real.onnx"),
        "{e}"
    );
}
