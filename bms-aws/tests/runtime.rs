//! The `bms-lambda` binary under the real runtime protocol: a Lambda Runtime API
//! (`/2018-06-01/runtime/invocation/next`, `…/{id}/response`, `…/{id}/error`, as the
//! platform and `cargo lambda watch` serve it) on a loopback port, the binary started
//! with the environment Lambda gives a function, S3 and DynamoDB on a moto server.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bms_aws::{Buckets, S3Url, objects, table};
use serde_json::{Value, json};

mod common;
use common::{Moto, daily_csv, s3_event};

/// What the function posted back for each invocation: (request id, route, body).
type Posts = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A Runtime API that hands out `events` in order, then holds `next` until the process
/// is killed.
fn runtime_api(events: Vec<Value>) -> (u16, Posts) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let queue = Arc::new(Mutex::new(
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("req-{i}"), e))
            .collect::<VecDeque<_>>(),
    ));
    let posts: Posts = Arc::new(Mutex::new(Vec::new()));
    let p = posts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let (queue, posts) = (queue.clone(), p.clone());
            std::thread::spawn(move || serve(conn, &queue, &posts));
        }
    });
    (port, posts)
}

fn serve(conn: TcpStream, queue: &Mutex<VecDeque<(String, Value)>>, posts: &Posts) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).unwrap();
                body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        } else {
            body.resize(length, 0);
            reader.read_exact(&mut body).unwrap();
        }
        if method == "GET" && path == "/2018-06-01/runtime/invocation/next" {
            let next = queue.lock().unwrap().pop_front();
            let Some((id, event)) = next else {
                // No more events: hold the request, as the platform does while idle.
                std::thread::sleep(Duration::from_secs(600));
                return;
            };
            let body = event.to_string();
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 120_000;
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Lambda-Runtime-Aws-Request-Id: {id}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:bms\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        } else {
            let route = path.rsplit('/').next().unwrap_or("").to_owned();
            let id = path.split('/').nth(4).unwrap_or("").to_owned();
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            posts.lock().unwrap().push((id, route, value));
            out.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn the_function_binary_answers_invocations_of_the_runtime_api() {
    let mut moto = Moto::start();
    moto.create_bucket("fleet");
    let tmp = tempfile::tempdir().unwrap();
    let daily = daily_csv(tmp.path(), 6, 50, 5);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let sdk = moto.sdk().await;
            let client = aws_sdk_dynamodb::Client::new(&sdk);
            table::ensure_table(&client, "bms-results").await.unwrap();
            let store = Buckets::new(&sdk, None).get("fleet").unwrap();
            let url = S3Url::parse("s3://fleet/in/day 1.csv").unwrap();
            objects::upload(store, &daily, &url).await.unwrap();
        });

    // An HTTP API (v2) request for /v1/predict, with a stage in the path.
    let width = bms_core::model::Model::from_bytes(bms_aws::SHIPPED_MODEL)
        .unwrap()
        .input_width();
    let features = vec!["0.25"; width].join(",");
    let api = json!({
        "version": "2.0", "routeKey": "POST /v1/predict", "rawPath": "/prod/v1/predict",
        "rawQueryString": "", "headers": {"content-type": "application/json"},
        "requestContext": {"stage": "prod", "requestId": "r1",
                           "http": {"method": "POST", "path": "/prod/v1/predict"}},
        "body": json!({"vin": "LVIN0001", "date": "2026-12-01", "features": features}).to_string(),
        "isBase64Encoded": false
    });
    let events = vec![
        s3_event("fleet", "in/day+1.csv"),
        json!({"hello": "world"}),
        api,
    ];
    let (port, posts) = runtime_api(events);
    let mut child = Command::new(env!("CARGO_BIN_EXE_bms-lambda"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "bms")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/04/[$LATEST]0123")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bms")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", moto.url())
        .env("BMS_TABLE", "bms-results")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while posts.lock().unwrap().len() < 3 {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("bms-lambda exited ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "no answers in 120 s: {:?}",
            posts.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();

    let posts = posts.lock().unwrap().clone();
    let (id, route, body) = &posts[0];
    assert_eq!(
        (id.as_str(), route.as_str()),
        ("req-0", "response"),
        "{log}"
    );
    let o = &body["objects"][0];
    assert_eq!(o["status"], "scored", "{body:#}");
    assert_eq!(o["object"], "s3://fleet/in/day 1.csv");
    let scored = o["summary"]["scored"].as_u64().unwrap();
    assert!(scored > 100, "{body:#}");
    assert_eq!(o["items"]["items"].as_u64(), Some(scored));
    // A malformed event is the invocation's error, named as the runtime expects.
    let (id, route, body) = &posts[1];
    assert_eq!((id.as_str(), route.as_str()), ("req-1", "error"), "{log}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("no Records"),
        "{body:#}"
    );
    // The API event is answered with a proxy response, and its prediction recorded.
    let (id, route, resp) = &posts[2];
    assert_eq!(
        (id.as_str(), route.as_str()),
        ("req-2", "response"),
        "{log}"
    );
    assert_eq!(resp["statusCode"], 200, "{resp:#}");
    let answer: Value = serde_json::from_str(resp["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["vin"], "LVIN0001");
    assert!(answer["predicted_prob"].as_f64().is_some(), "{answer}");
    let items = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = aws_sdk_dynamodb::Client::new(&moto.sdk().await);
            client
                .scan()
                .table_name("bms-results")
                .send()
                .await
                .unwrap()
                .count
        });
    assert_eq!(items as u64, scored + 1);
    // The cold start is logged: the model loaded and checked once, before the first event.
    let ready = log
        .lines()
        .find(|l| l.contains("ready in"))
        .unwrap_or_else(|| panic!("no start line in {log}"));
    assert!(ready.contains("consistency-ref14x6"), "{ready}");
    eprintln!("{ready}");
}
