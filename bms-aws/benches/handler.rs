//! The bucket-event handler against the reference's way, on one object of reference batch
//! lines (`VIN,Date,f1,…,f84`) in a moto S3 bucket on loopback (issue 16, Performance).
//! Not part of CI; results in benches/RESULTS.md.
//!
//! ```sh
//! MOTO_SERVER=/path/to/moto_server cargo bench -p bms-aws --bench handler -- [--lines 10000,100000] [--repeats 3]
//! ```
//!
//! For each size, alternating (ours, reference) `--repeats` times:
//!
//! - **ours**: [`BucketHandler::handle`] on the object's S3 event, from the event to the
//!   committed outputs (Parquet, events, rejects, summary, manifest) and one DynamoDB item
//!   per line (BatchWriteItem, 25 per call) — also timed without the table
//!   (`objects only`), which shows what moto's DynamoDB costs;
//! - **reference**: what the reference function does, flattered: the object read from S3,
//!   then one endpoint call per line, each line's features POSTed to `bms serve`'s
//!   `/invocations` (in this process, on loopback) over one kept-alive connection, and
//!   nothing written anywhere (the reference also puts one item per line and JSON objects;
//!   those are not timed); and, up to `--full-max` lines (default 10,000), **reference
//!   with items**: the same plus one PutItem per line, as the reference function writes
//!   its table (one sequential call per line, on the same moto).
//!
//! Under `cargo test` (no `--bench`) it runs 300 lines once and checks that both ways give
//! the same probabilities, so the bench cannot rot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bms_aws::table::{self, KeyValueTable};
use bms_aws::{BucketHandler, Buckets, DynamoTable, Retry, S3Url, objects};
use bms_batch::Job;
use bms_core::model::Model;
use bms_core::{SimConfig, simulate_daily};

#[path = "../tests/common/mod.rs"]
mod common;
use common::{Moto, s3_event};

struct Args {
    lines: Vec<usize>,
    repeats: usize,
    /// The reference with its per-line PutItem timed too, up to this many lines.
    full_max: usize,
    smoke: bool,
}

fn args() -> Args {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mut a = Args {
        lines: if smoke {
            vec![300]
        } else {
            vec![10_000, 100_000]
        },
        repeats: if smoke { 1 } else { 3 },
        full_max: 10_000,
        smoke,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--lines" => {
                a.lines = it
                    .next()
                    .expect("--lines N[,N…]")
                    .split(',')
                    .map(|n| n.parse().expect("--lines: a number"))
                    .collect()
            }
            "--repeats" => a.repeats = it.next().expect("--repeats N").parse().unwrap(),
            "--full-max" => a.full_max = it.next().expect("--full-max N").parse().unwrap(),
            _ => {}
        }
    }
    a
}

/// `n` reference batch lines from a simulated fleet large enough to have them.
fn batch_lines(model: &Model, n: usize) -> Vec<u8> {
    let spec = &model.contract().spec;
    let days = 160u32;
    let per_vehicle = (days as usize)
        .saturating_sub(spec.context + spec.horizon)
        .max(1);
    let sim = simulate_daily(&SimConfig {
        vehicles: n.div_ceil(per_vehicle) + 1,
        days,
        seed: 16,
        weak_fraction: 0.3,
        ..SimConfig::default()
    })
    .unwrap();
    let batch = bms_core::windows(&sim.table, spec).unwrap();
    assert!(batch.len() >= n, "{} windows < {n}", batch.len());
    let mut out = Vec::new();
    bms_core::io::batch_csv::write_batch_csv_to(&mut out, &batch, false).unwrap();
    let end = memchr_nth(&out, n);
    out.truncate(end);
    out
}

/// The offset just past the `n`th newline.
fn memchr_nth(bytes: &[u8], n: usize) -> usize {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map_or(bytes.len(), |(i, _)| i + 1)
}

/// `bms serve` in this process on a loopback port: the reference's endpoint.
fn start_endpoint(model: Arc<Model>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    let config = bms::serve::ServeConfig {
        host: "127.0.0.1".into(),
        port: 0,
        max_body: 6 << 20,
        max_payload_mb: 6,
        timeout: Duration::from_secs(60),
        max_inflight: 64,
        workers: 2,
        inline_max_bytes: 0,
        drain: Duration::from_secs(1),
        threshold: model.contract().threshold,
        store: None,
        store_max_queued: 1_000_000,
        tls: None,
        tokens: None,
    };
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(bms::serve::run(model, config, move |addr| {
                tx.send(addr).unwrap()
            }))
            .unwrap();
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap()
}

/// One `/invocations` call per line over a kept-alive connection: the probabilities.
fn per_line(addr: SocketAddr, lines: &[u8]) -> Vec<f32> {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_nodelay(true).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut probs = Vec::new();
    let mut req = Vec::with_capacity(1024);
    let mut head = String::new();
    let mut body = Vec::new();
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        // The features: the line without VIN and Date, as the reference sends them.
        let mut commas = 0;
        let start = line
            .iter()
            .position(|b| {
                commas += usize::from(*b == b',');
                commas == 2
            })
            .unwrap()
            + 1;
        let features = &line[start..];
        req.clear();
        write!(
            req,
            "POST /invocations HTTP/1.1\r\nHost: endpoint\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
            features.len()
        )
        .unwrap();
        req.extend_from_slice(features);
        w.write_all(&req).unwrap();
        let mut len = 0usize;
        let mut status = 0u16;
        loop {
            head.clear();
            r.read_line(&mut head).unwrap();
            let h = head.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some(s) = h.strip_prefix("HTTP/1.1 ") {
                status = s[..3].parse().unwrap();
            } else if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        body.resize(len, 0);
        r.read_exact(&mut body).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        probs.push(std::str::from_utf8(&body).unwrap().trim().parse().unwrap());
    }
    probs
}

fn main() {
    let args = args();
    let model = Arc::new(Model::from_bytes(bms_aws::SHIPPED_MODEL).unwrap());
    let endpoint = start_endpoint(model.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut moto = Moto::start();
    moto.create_bucket("fleet");
    let sdk = rt.block_on(moto.sdk());
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let buckets = Buckets::new(&sdk, None);
    let store = buckets.get("fleet").unwrap();
    println!(
        "# bms-lambda handler vs one endpoint call per line (moto {} on loopback, model {})",
        moto.url(),
        model.contract().model_id
    );
    println!(
        "| lines | ours: event → committed objects + items | ours: objects only | reference: per-line calls | reference: per-line calls + PutItem | reference / ours (calls only) | reference + PutItem / ours |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.lines {
        let lines = batch_lines(&model, n);
        let key = format!("incoming/batch-{n}.csv");
        rt.block_on(async {
            objects::put(
                store.as_ref(),
                &S3Url::parse(&format!("s3://fleet/{key}")).unwrap(),
                lines.clone(),
            )
            .await
            .unwrap()
        });
        let event = s3_event("fleet", &key);
        let (mut ours, mut objects_only, mut reference, mut full) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for rep in 0..args.repeats {
            // A fresh table and results prefix each time: nothing to skip or replace.
            let name = format!("t{n}-{rep}");
            rt.block_on(table::ensure_table(&client, &name)).unwrap();
            let handler = |table: Option<Arc<dyn KeyValueTable>>, prefix: String| BucketHandler {
                model: model.clone(),
                job: Job::default(),
                buckets: Buckets::new(&sdk, None),
                table,
                retry: Retry::default(),
                results_prefix: prefix,
                output_bucket: None,
            };
            let with_table = handler(
                Some(Arc::new(DynamoTable::new(client.clone(), &name))),
                format!("results-{n}-{rep}/"),
            );
            let t = Instant::now();
            let out = rt.block_on(with_table.handle(&event)).unwrap();
            ours.push(t.elapsed().as_secs_f64());
            let o = &out["objects"][0];
            assert_eq!(o["status"], "scored", "{out:#}");
            assert_eq!(o["summary"]["scored"].as_u64(), Some(n as u64), "{out:#}");
            assert_eq!(o["items"]["items"].as_u64(), Some(n as u64), "{out:#}");

            let bare = handler(None, format!("bare-{n}-{rep}/"));
            let t = Instant::now();
            rt.block_on(bare.handle(&event)).unwrap();
            objects_only.push(t.elapsed().as_secs_f64());

            let t = Instant::now();
            let body = rt.block_on(async {
                objects::get_if_exists(
                    store.as_ref(),
                    &S3Url::parse(&format!("s3://fleet/{key}")).unwrap(),
                )
                .await
                .unwrap()
                .unwrap()
            });
            let probs = per_line(endpoint, &body);
            let calls = t.elapsed().as_secs_f64();
            reference.push(calls);
            assert_eq!(probs.len(), n);
            if n <= args.full_max {
                let name = format!("ref{n}-{rep}");
                rt.block_on(table::ensure_table(&client, &name)).unwrap();
                let rows =
                    bms_core::io::batch_csv::read_scoring_csv(&body, model.input_width()).unwrap();
                let names = bms_batch::store::event_field_names(&model.contract().spec);
                let w = model.input_width();
                let t = Instant::now();
                rt.block_on(async {
                    let source = format!("s3://fleet/{key}");
                    for ((i, k), p) in rows.keys.iter().zip(&probs) {
                        let pred = bms_batch::store::Prediction::new(
                            &k.vin,
                            k.date,
                            *p,
                            model.contract().threshold,
                            &model.contract().model_id,
                            rows.x[i * w..(i + 1) * w].to_vec(),
                        );
                        let item = table::prediction_item(&pred, &names, &source);
                        client
                            .put_item()
                            .table_name(&name)
                            .set_item(Some(item))
                            .send()
                            .await
                            .unwrap();
                    }
                });
                full.push(calls + t.elapsed().as_secs_f64());
            }
            if args.smoke {
                // Both ways give the same answer: the events the handler wrote, in order.
                let x =
                    bms_core::io::batch_csv::read_scoring_csv(&lines, model.input_width()).unwrap();
                let direct = model
                    .predict(
                        ndarray::ArrayView2::from_shape((x.n, model.input_width()), &x.x).unwrap(),
                    )
                    .unwrap();
                assert_eq!(probs, direct.to_vec());
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (o, b, r) = (med(&mut ours), med(&mut objects_only), med(&mut reference));
        let (f, fr) = if full.is_empty() {
            ("not run".to_owned(), "—".to_owned())
        } else {
            let f = med(&mut full);
            (format!("{f:.2} s"), format!("{:.1}×", f / o))
        };
        println!(
            "| {n} | {:.2} s ({:.0} lines/s) | {:.2} s | {:.2} s ({:.0} lines/s) | {f} | {:.2}× | {fr} |",
            o,
            n as f64 / o,
            b,
            r,
            n as f64 / r,
            r / o
        );
    }
    println!("(median of {} alternating runs each)", args.repeats);
}
