//! What the tests against moto share: the server, simulated inputs, recorded events.
#![allow(dead_code)] // each test crate uses a part

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bms_core::{SimConfig, simulate_daily};
use serde_json::{Value, json};

/// A moto server on a free loopback port, killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let exe = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the moto server {exe:?} ({e}): run ./scripts/test-aws.sh, \
                     which installs it, or set MOTO_SERVER"
                )
            });
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited at start: {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The port answers before the app is ready: wait for a real response.
        while moto.http("GET", "/moto-api/data.json", "").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain HTTP request (moto does not check signatures): (status, body).
    pub fn http(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.http_with(method, path, &[], body)
    }

    /// The same with extra headers.
    pub fn http_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    /// An SQS query-protocol call (`params` form-encoded already): the XML answer. moto
    /// routes by the service named in the Authorization header.
    pub fn sqs(&mut self, params: &str) -> String {
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20261204/us-east-1/sqs/aws4_request, \
                    SignedHeaders=host, Signature=0";
        let (status, body) = self.http_with(
            "POST",
            "/",
            &[
                ("Authorization", auth),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            params,
        );
        assert_eq!(status, 200, "SQS {params}: {body}");
        body
    }

    pub fn create_bucket(&mut self, name: &str) {
        let (status, body) = self.http("PUT", &format!("/{name}"), "");
        assert_eq!(status, 200, "creating bucket {name}: {body}");
    }

    pub async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.url())
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simulated fleet's daily table as CSV.
pub fn daily_csv(dir: &Path, vehicles: usize, days: u32, seed: u64) -> PathBuf {
    let sim = simulate_daily(&SimConfig {
        vehicles,
        days,
        seed,
        weak_fraction: 0.3,
        ..SimConfig::default()
    })
    .unwrap();
    let path = dir.join(format!("daily-{seed}.csv"));
    bms_core::io::write_daily_csv(&path, &sim.table, true).unwrap();
    path
}

/// An S3 ObjectCreated event as S3 sends it (`raw_key` form-URL-encoded).
pub fn s3_event(bucket: &str, raw_key: &str) -> Value {
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-04T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "bms",
               "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
               "object": {"key": raw_key, "size": 1, "sequencer": "0A1B2C3D4E5F678901"}}
    }]})
}

/// `text` with the five XML entities (and numeric references) replaced.
pub fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let j = rest[i..]
            .find(';')
            .map(|j| i + j)
            .expect("an unterminated entity");
        let entity = &rest[i + 1..j];
        match entity {
            "quot" => out.push('"'),
            "amp" => out.push('&'),
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "apos" => out.push('\''),
            e if e.starts_with("#x") => {
                out.push(char::from_u32(u32::from_str_radix(&e[2..], 16).unwrap()).unwrap())
            }
            e if e.starts_with('#') => out.push(char::from_u32(e[1..].parse().unwrap()).unwrap()),
            e => panic!("unknown entity &{e};"),
        }
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

/// The `<tag>…</tag>` texts of `xml`, unescaped.
pub fn xml_texts(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let start = i + open.len();
        let end = start + rest[start..].find(&close).expect("an unclosed element");
        out.push(xml_unescape(&rest[start..end]));
        rest = &rest[end + close.len()..];
    }
    out
}

/// A multi-threaded runtime (2 workers, as the function has) running `f`.
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Every item of the table `name`, all pages.
pub async fn scan_items(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Vec<bms_aws::table::Item> {
    client
        .scan()
        .table_name(name)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
}
