//! The bucket-event handler end to end against a moto server (S3 + DynamoDB + SQS on one
//! loopback port) that each test starts on a random port: objects and items compared with
//! `bms predict --out` on the same file, repeated deliveries, bad objects, injected
//! failures, and the trigger path through an SQS queue.
//!
//! moto is `$MOTO_SERVER` (scripts/test-aws.sh installs it), else `moto_server` on PATH;
//! without it these tests fail with a message saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use bms_aws::table::{self, Item, KeyValueTable, MAX_BATCH, WriteError};
use bms_aws::{BucketHandler, Buckets, DynamoTable, Retry, S3Url, objects};
use bms_batch::store::parquet::read_predictions;
use bms_batch::{Job, NoObserver};
use bms_core::model::Model;
use futures_util::TryStreamExt;
use object_store::ObjectStore;
use serde_json::{Value, json};

mod common;
use common::{Moto, daily_csv, run, s3_event, scan_items, xml_texts};

fn model() -> Arc<Model> {
    Arc::new(Model::from_bytes(bms_aws::SHIPPED_MODEL).unwrap())
}

/// A DynamoDB table that records the size of every batch, optionally failing every call
/// after the first `fail_after`.
struct Counting {
    inner: DynamoTable,
    sizes: Mutex<Vec<usize>>,
    fail_after: Option<usize>,
    calls: AtomicUsize,
}

#[async_trait]
impl KeyValueTable for Counting {
    async fn batch_write(&self, items: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_after.is_some_and(|f| n >= f) {
            return Err(WriteError::Failed(anyhow::anyhow!(
                "injected: the table is unreachable"
            )));
        }
        self.sizes.lock().unwrap().push(items.len());
        self.inner.batch_write(items).await
    }

    async fn batch_delete(&self, keys: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        self.inner.batch_delete(keys).await
    }
}

fn handler(
    sdk: &aws_config::SdkConfig,
    table: Arc<dyn KeyValueTable>,
    output_bucket: Option<&str>,
) -> BucketHandler {
    BucketHandler {
        model: model(),
        job: Job::default(),
        buckets: Buckets::new(sdk, None),
        table: Some(table),
        retry: Retry::default(),
        results_prefix: "results/".to_owned(),
        output_bucket: output_bucket.map(str::to_owned),
    }
}

async fn scan(client: &aws_sdk_dynamodb::Client, name: &str) -> BTreeMap<String, Item> {
    scan_items(client, name)
        .await
        .into_iter()
        .map(|it| {
            let AttributeValue::S(k) = &it["request_id"] else {
                panic!("item without request_id")
            };
            (k.clone(), it)
        })
        .collect()
}

async fn list(store: &dyn ObjectStore, prefix: &str) -> BTreeSet<String> {
    let prefix = object_store::path::Path::from(prefix);
    store
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

async fn get(store: &dyn ObjectStore, bucket: &str, key: &str) -> Vec<u8> {
    let url = S3Url {
        bucket: bucket.into(),
        key: key.into(),
    };
    objects::get_if_exists(store, &url)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no object {url}"))
}

#[test]
fn an_object_event_writes_what_bms_predict_writes_and_repeats_add_nothing() {
    run(async {
        let mut moto = Moto::start();
        moto.create_bucket("fleet");
        let sdk = moto.sdk().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        table::ensure_table(&client, "predictions").await.unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let daily = daily_csv(tmp.path(), 30, 80, 7);

        let buckets = Buckets::new(&sdk, None);
        let store = buckets.get("fleet").unwrap();
        let key = "incoming/fleet day+1 (100%).csv";
        let input = S3Url::parse(&format!("s3://fleet/{key}")).unwrap();
        objects::upload(store.clone(), &daily, &input)
            .await
            .unwrap();
        // Stored under the key verbatim (not re-encoded), as other S3 clients see it.
        let (status, listing) = moto.http("GET", "/fleet?list-type=2", "");
        assert_eq!(status, 200);
        assert!(
            listing.contains("<Key>incoming/fleet day+1 (100%).csv</Key>"),
            "{listing}"
        );

        let counting = Arc::new(Counting {
            inner: DynamoTable::new(client.clone(), "predictions"),
            sizes: Mutex::new(Vec::new()),
            fail_after: None,
            calls: AtomicUsize::new(0),
        });
        let h = handler(&sdk, counting.clone(), None);
        // As S3 sends it: a space as `+`, a plus as %2B.
        let event = s3_event("fleet", "incoming/fleet+day%2B1+%28100%25%29.csv");
        let result = h.handle(&event).await.unwrap();
        let o = &result["objects"][0];
        assert_eq!(o["status"], "scored", "{result:#}");
        assert_eq!(o["object"], "s3://fleet/incoming/fleet day+1 (100%).csv");

        // The same file through the pipeline locally, as `bms predict --out DIR
        // --partition-by date` writes it.
        let local = tmp.path().join("local");
        let model = model();
        let job = Job {
            partition_by_date: true,
            ..Job::default()
        };
        let summary = bms_batch::score_to_dir(&daily, &model, &job, &local, &NoObserver).unwrap();
        assert!(summary.scored >= 1000, "only {} windows", summary.scored);
        assert_eq!(o["summary"]["scored"], summary.scored);
        assert_eq!(o["summary"]["alarms"], summary.alarms);

        // Items: one per prediction, batches of at most 25 (moto would take 26).
        let sizes = counting.sizes.lock().unwrap().clone();
        assert!(
            sizes.iter().all(|&n| (1..=MAX_BATCH).contains(&n)),
            "{sizes:?}"
        );
        assert!(
            sizes.len() as u64 >= summary.scored / 25,
            "{} batches",
            sizes.len()
        );
        let items = scan(&client, "predictions").await;
        assert_eq!(items.len() as u64, summary.scored);
        let local_preds = read_predictions(&local).unwrap();
        assert_eq!(local_preds.rows.len() as u64, summary.scored);
        for p in &local_preds.rows {
            let it = items
                .get(&p.event_id)
                .unwrap_or_else(|| panic!("no item {}", p.event_id));
            assert_eq!(it["vin"], AttributeValue::S(p.vin.clone()));
            assert_eq!(it["date"], AttributeValue::S(p.date.to_string()));
            let AttributeValue::N(prob) = &it["predicted_prob"] else {
                panic!()
            };
            assert_eq!(prob.parse::<f32>().unwrap(), p.predicted_prob);
            assert_eq!(it["alarm"], AttributeValue::Bool(p.alarm));
            assert_eq!(it.len(), 7 + local_preds.names.len());
        }

        // Objects: the events and rejects byte for byte, the Parquet partitions row for row.
        let listed = list(store.as_ref(), "results").await;
        let outputs: BTreeSet<String> = o["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v.as_str()
                    .unwrap()
                    .trim_start_matches("s3://fleet/")
                    .to_owned()
            })
            .collect();
        assert_eq!(listed, outputs);
        let run = "incoming_2Ffleet_20day_2B1_20_28100_25_29.csv.".to_owned() + &summary.model_id;
        let events_key = listed
            .iter()
            .find(|k| k.starts_with("results/events/"))
            .unwrap();
        assert!(
            events_key.starts_with(&format!("results/events/{run}.")),
            "{events_key}"
        );
        assert_eq!(
            get(store.as_ref(), "fleet", events_key).await,
            std::fs::read(local.join("events.jsonl")).unwrap()
        );
        let rejects_key = listed
            .iter()
            .find(|k| k.starts_with("results/rejects/"))
            .unwrap();
        assert_eq!(
            get(store.as_ref(), "fleet", rejects_key).await,
            std::fs::read(local.join("rejects.csv")).unwrap()
        );
        let fetched = tmp.path().join("fetched");
        let mut parts = 0;
        for k in listed
            .iter()
            .filter(|k| k.starts_with("results/predictions/"))
        {
            let date_dir = k.split('/').nth(2).unwrap();
            assert!(date_dir.starts_with("date="), "{k}");
            let dir = fetched.join("predictions").join(date_dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("part-0.parquet"),
                get(store.as_ref(), "fleet", k).await,
            )
            .unwrap();
            parts += 1;
        }
        let local_parts = std::fs::read_dir(local.join("predictions"))
            .unwrap()
            .count();
        assert_eq!(parts, local_parts);
        let remote_preds = read_predictions(&fetched).unwrap();
        assert_eq!(remote_preds.names, local_preds.names);
        assert_eq!(remote_preds.rows, local_preds.rows);
        let manifest_key = format!("results/runs/{run}/_SUCCESS");
        let manifest: Value =
            serde_json::from_slice(&get(store.as_ref(), "fleet", &manifest_key).await).unwrap();
        assert_eq!(manifest["scored"], summary.scored);
        assert_eq!(
            manifest["objects"].as_array().unwrap().len(),
            listed.len() - 1
        );

        // Delivered again (at-least-once): the same objects, the same items, nothing added.
        let again = h.handle(&event).await.unwrap();
        assert_eq!(again["objects"][0]["status"], "scored");
        assert_eq!(again["objects"][0]["outputs"], o["outputs"]);
        assert_eq!(list(store.as_ref(), "results").await, listed);
        assert_eq!(scan(&client, "predictions").await, items);

        // The function's own outputs landing in the bucket are not scored.
        let own = h
            .handle(&s3_event("fleet", &urlencode(events_key)))
            .await
            .unwrap();
        assert_eq!(own["objects"][0]["status"], "skipped", "{own:#}");
    });
}

/// `key` form-URL-encoded as S3 notifications carry it.
fn urlencode(key: &str) -> String {
    let mut s = String::new();
    for b in key.bytes() {
        match b {
            b' ' => s.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => {
                s.push(char::from(b))
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

#[test]
fn bad_objects_are_reported_and_failed_runs_leave_nothing_committed() {
    run(async {
        let mut moto = Moto::start();
        moto.create_bucket("inbox");
        moto.create_bucket("outbox");
        let sdk = moto.sdk().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        table::ensure_table(&client, "t").await.unwrap();
        let buckets = Buckets::new(&sdk, None);
        let inp = buckets.get("inbox").unwrap();
        let out = buckets.get("outbox").unwrap();
        let tmp = tempfile::tempdir().unwrap();

        // Not a table: reported as failed, nothing written, the invocation succeeds.
        let junk = tmp.path().join("junk.csv");
        std::fs::write(&junk, b"\x00\x01PK not a csv at all\n").unwrap();
        objects::upload(
            inp.clone(),
            &junk,
            &S3Url::parse("s3://inbox/junk.csv").unwrap(),
        )
        .await
        .unwrap();
        let table: Arc<dyn KeyValueTable> = Arc::new(DynamoTable::new(client.clone(), "t"));
        let h = handler(&sdk, table, Some("outbox"));
        let r = h.handle(&s3_event("inbox", "junk.csv")).await.unwrap();
        assert_eq!(r["objects"][0]["status"], "failed", "{r:#}");
        assert!(
            r["objects"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("junk.csv"),
            "{r:#}"
        );
        // A key with a broken escape, and an object that is gone.
        let r = h.handle(&s3_event("inbox", "bad%zzkey.csv")).await.unwrap();
        assert!(
            r["objects"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("malformed %-escape"),
            "{r:#}"
        );
        let r = h.handle(&s3_event("inbox", "missing.csv")).await.unwrap();
        assert!(
            r["objects"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("no longer exists"),
            "{r:#}"
        );
        assert!(list(out.as_ref(), "results").await.is_empty());
        assert!(scan(&client, "t").await.is_empty());

        // The table fails midway: the invocation fails (to be delivered again), and
        // nothing of the run stays under the prefix.
        let daily = daily_csv(tmp.path(), 8, 60, 3);
        objects::upload(
            inp.clone(),
            &daily,
            &S3Url::parse("s3://inbox/d.csv").unwrap(),
        )
        .await
        .unwrap();
        let failing = Arc::new(Counting {
            inner: DynamoTable::new(client.clone(), "t"),
            sizes: Mutex::new(Vec::new()),
            fail_after: Some(3),
            calls: AtomicUsize::new(0),
        });
        let h2 = handler(&sdk, failing, Some("outbox"));
        let e = h2.handle(&s3_event("inbox", "d.csv")).await.unwrap_err();
        assert!(format!("{e:#}").contains("injected"), "{e:#}");
        assert!(format!("{e:#}").contains("s3://inbox/d.csv"), "{e:#}");
        assert!(list(out.as_ref(), "results").await.is_empty());

        // Delivered again with the table back: committed, the output bucket only.
        let r = h.handle(&s3_event("inbox", "d.csv")).await.unwrap();
        assert_eq!(r["objects"][0]["status"], "scored", "{r:#}");
        let scored = r["objects"][0]["summary"]["scored"].as_u64().unwrap();
        assert_eq!(scan(&client, "t").await.len() as u64, scored);
        let listed = list(out.as_ref(), "results").await;
        assert!(
            listed.iter().any(|k| k.ends_with("/_SUCCESS")),
            "{listed:?}"
        );
        assert!(list(inp.as_ref(), "results").await.is_empty());

        // A new version of the object replaces the old run's objects.
        let daily2 = daily_csv(tmp.path(), 5, 45, 11);
        objects::upload(
            inp.clone(),
            &daily2,
            &S3Url::parse("s3://inbox/d.csv").unwrap(),
        )
        .await
        .unwrap();
        let r2 = h.handle(&s3_event("inbox", "d.csv")).await.unwrap();
        assert_eq!(r2["objects"][0]["status"], "scored", "{r2:#}");
        let listed2 = list(out.as_ref(), "results").await;
        let outputs: BTreeSet<String> = r2["objects"][0]["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v.as_str()
                    .unwrap()
                    .trim_start_matches("s3://outbox/")
                    .to_owned()
            })
            .collect();
        assert_eq!(listed2, outputs);
        // …and its items: exactly the new version's predictions remain in the table.
        let events_key = outputs.iter().find(|k| k.contains("/events/")).unwrap();
        let events = get(out.as_ref(), "outbox", events_key).await;
        let new_ids: BTreeSet<String> = String::from_utf8(events)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["request_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            new_ids.len() as u64,
            r2["objects"][0]["summary"]["scored"].as_u64().unwrap()
        );
        let table_ids: BTreeSet<String> = scan(&client, "t").await.into_keys().collect();
        assert_eq!(table_ids, new_ids);
        assert!(
            listed2.is_disjoint(
                &listed
                    .iter()
                    .filter(|k| !k.ends_with("_SUCCESS"))
                    .cloned()
                    .collect()
            )
        );
    });
}

#[test]
fn the_trigger_path_through_a_queue_bucket_notification_to_sqs_to_the_handler() {
    run(async {
        let mut moto = Moto::start();
        moto.create_bucket("fleet");
        let queue = xml_texts(
            &moto.sqs("Action=CreateQueue&QueueName=bms-events"),
            "QueueUrl",
        )
        .pop()
        .expect("a queue URL");
        let config = "<NotificationConfiguration><QueueConfiguration><Id>bms</Id>\
            <Queue>arn:aws:sqs:us-east-1:123456789012:bms-events</Queue>\
            <Event>s3:ObjectCreated:*</Event></QueueConfiguration></NotificationConfiguration>";
        let (status, body) = moto.http_with(
            "PUT",
            "/fleet?notification",
            &[("Content-Type", "application/xml")],
            config,
        );
        assert_eq!(status, 200, "{body}");

        let sdk = moto.sdk().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        table::ensure_table(&client, "predictions").await.unwrap();
        let buckets = Buckets::new(&sdk, None);
        let store = buckets.get("fleet").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let daily = daily_csv(tmp.path(), 5, 50, 21);
        let input = S3Url::parse("s3://fleet/incoming/day 1.csv").unwrap();
        objects::upload(store.clone(), &daily, &input)
            .await
            .unwrap();

        // What the queue holds (the s3:TestEvent first), as a Lambda SQS event.
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !records
            .iter()
            .any(|r: &Value| r["body"].as_str().unwrap().contains("ObjectCreated"))
        {
            assert!(
                Instant::now() < deadline,
                "no ObjectCreated message in 20 s: {records:?}"
            );
            let answer = moto.sqs(&format!(
                "Action=ReceiveMessage&QueueUrl={queue}&MaxNumberOfMessages=10&WaitTimeSeconds=1"
            ));
            let ids = xml_texts(&answer, "MessageId");
            let handles = xml_texts(&answer, "ReceiptHandle");
            for ((id, handle), body) in ids.iter().zip(&handles).zip(xml_texts(&answer, "Body")) {
                records.push(json!({
                    "messageId": id, "receiptHandle": handle, "body": body,
                    "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bms-events",
                }));
            }
        }
        assert!(
            records
                .iter()
                .any(|r| r["body"].as_str().unwrap().contains("s3:TestEvent")),
            "{records:?}"
        );
        let event = json!({ "Records": records });
        let table: Arc<dyn KeyValueTable> =
            Arc::new(DynamoTable::new(client.clone(), "predictions"));
        let h = handler(&sdk, table, None);
        let result = h.handle(&event).await.unwrap();
        let objects = result["objects"].as_array().unwrap();
        assert_eq!(objects.len(), 1, "{result:#}");
        assert_eq!(objects[0]["object"], "s3://fleet/incoming/day 1.csv");
        assert_eq!(objects[0]["status"], "scored", "{result:#}");
        let scored = objects[0]["summary"]["scored"].as_u64().unwrap();
        assert!(scored > 0);
        assert_eq!(scan(&client, "predictions").await.len() as u64, scored);
        // Each result object landing in the bucket notifies the queue too; fed back to
        // the handler they are skipped, not scored again.
        let answer = moto.sqs(&format!(
            "Action=ReceiveMessage&QueueUrl={queue}&MaxNumberOfMessages=10&WaitTimeSeconds=1"
        ));
        let bodies = xml_texts(&answer, "Body");
        assert!(!bodies.is_empty(), "the outputs sent no notifications");
        let again = json!({"Records": bodies.iter().map(|b| json!({"eventSource": "aws:sqs", "body": b})).collect::<Vec<_>>()});
        let r = h.handle(&again).await.unwrap();
        for o in r["objects"].as_array().unwrap() {
            assert_eq!(o["status"], "skipped", "{r:#}");
        }
    });
}
