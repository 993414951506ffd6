//! The key-value results table: one DynamoDB item per prediction, keyed by the
//! deterministic event id, written with BatchWriteItem in chunks of at most 25 requests,
//! `UnprocessedItems` and throttling retried with exponential backoff.
//!
//! | attribute | type | value |
//! |---|---|---|
//! | `request_id` | S (partition key) | [`bms_batch::store::event_id`] of (vin, date, model) |
//! | `vin`, `date`, `model_id` | S | `date` as `YYYY-MM-DD` |
//! | `predicted_prob` | N | the shortest decimal that reads back to the same `f32` |
//! | `alarm` | BOOL | `predicted_prob >= threshold` |
//! | `source` | S | the `s3://` URL of the scored object (or the API route) |
//! | `total_voltage_14` … `min_temperature_1` | N, or NULL when missing | the window's features, named as in the stored-event JSON |
//!
//! A plain put on a deterministic key makes every retry and every repeated delivery
//! idempotent: the same prediction always lands on the same item.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use bms_batch::store::{EVENT_ID_FIELD, Prediction, iso_date};

/// An item of the table.
pub type Item = HashMap<String, AttributeValue>;

/// BatchWriteItem takes at most this many requests per call.
pub const MAX_BATCH: usize = 25;

/// The item of one prediction; `feature_names` name its features in order (the
/// stored-event names, [`bms_batch::store::event_field_names`]).
pub fn prediction_item(p: &Prediction, feature_names: &[String], source: &str) -> Item {
    let mut item = Item::with_capacity(7 + p.features.len());
    item.insert(EVENT_ID_FIELD.into(), AttributeValue::S(p.event_id.clone()));
    item.insert("vin".into(), AttributeValue::S(p.vin.clone()));
    item.insert("date".into(), AttributeValue::S(iso_date(p.date)));
    item.insert("predicted_prob".into(), number(p.predicted_prob));
    item.insert("alarm".into(), AttributeValue::Bool(p.alarm));
    item.insert("model_id".into(), AttributeValue::S(p.model_id.clone()));
    item.insert("source".into(), AttributeValue::S(source.to_owned()));
    for (name, &v) in feature_names.iter().zip(&p.features) {
        item.insert(name.clone(), number(v));
    }
    item
}

/// A number attribute, or NULL for NaN and infinities (which DynamoDB cannot represent).
fn number(v: f32) -> AttributeValue {
    if v.is_finite() {
        AttributeValue::N(ryu::Buffer::new().format_finite(v).to_owned())
    } else {
        AttributeValue::Null(true)
    }
}

/// Why a batch write failed.
#[derive(Debug)]
pub enum WriteError {
    /// The table refused for now (`ProvisionedThroughputExceededException`,
    /// `ThrottlingException`, `RequestLimitExceeded`): the same batch may be retried.
    Throttled(String),
    /// Anything else: the batch is not retried here.
    Failed(anyhow::Error),
}

/// Where items go: a DynamoDB table, or a fake one in tests.
#[async_trait]
pub trait KeyValueTable: Send + Sync {
    /// Writes at most [`MAX_BATCH`] items in one call; returns those the table left
    /// unprocessed (to be sent again).
    async fn batch_write(&self, items: Vec<Item>) -> Result<Vec<Item>, WriteError>;

    /// Deletes at most [`MAX_BATCH`] items by key (items holding only the key); returns
    /// the keys left unprocessed. Tables that cannot delete refuse.
    async fn batch_delete(&self, keys: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        let _ = keys;
        Err(WriteError::Failed(anyhow!(
            "this table cannot delete items"
        )))
    }
}

/// What a batch does with its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Delete,
}

/// A DynamoDB table through the official SDK.
#[derive(Debug, Clone)]
pub struct DynamoTable {
    client: aws_sdk_dynamodb::Client,
    name: String,
}

impl DynamoTable {
    pub fn new(client: aws_sdk_dynamodb::Client, name: impl Into<String>) -> Self {
        DynamoTable {
            client,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }
}

impl DynamoTable {
    /// One BatchWriteItem call: the items (puts) or keys (deletes) left unprocessed.
    async fn send(&self, requests: Vec<WriteRequest>, what: &str) -> Result<Vec<Item>, WriteError> {
        let out = self
            .client
            .batch_write_item()
            .request_items(&self.name, requests)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let code = e.code().unwrap_or_default().to_owned();
                let text = format!(
                    "DynamoDB BatchWriteItem ({what}s) on table {}: {}",
                    self.name,
                    aws_error_text(&e)
                );
                return Err(if THROTTLING.contains(&code.as_str()) {
                    WriteError::Throttled(text)
                } else {
                    WriteError::Failed(anyhow!(text))
                });
            }
        };
        let mut left = Vec::new();
        if let Some(mut unprocessed) = out.unprocessed_items
            && let Some(reqs) = unprocessed.remove(&self.name)
        {
            for r in reqs {
                if let Some(p) = r.put_request {
                    left.push(p.item);
                } else if let Some(d) = r.delete_request {
                    left.push(d.key);
                }
            }
        }
        Ok(left)
    }
}

const THROTTLING: [&str; 4] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ThrottlingError",
];

#[async_trait]
impl KeyValueTable for DynamoTable {
    async fn batch_write(&self, items: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        let mut requests = Vec::with_capacity(items.len());
        for item in items {
            let put = PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(|e| WriteError::Failed(e.into()))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.send(requests, "put").await
    }

    async fn batch_delete(&self, keys: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        use aws_sdk_dynamodb::types::DeleteRequest;
        let mut requests = Vec::with_capacity(keys.len());
        for key in keys {
            let del = DeleteRequest::builder()
                .set_key(Some(key))
                .build()
                .map_err(|e| WriteError::Failed(e.into()))?;
            requests.push(WriteRequest::builder().delete_request(del).build());
        }
        self.send(requests, "delete").await
    }
}

/// An SDK error as one line: the service's code and message when it answered, the
/// chain of causes otherwise (a refused connection, a timeout).
pub fn aws_error_text<E>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    if let (Some(code), msg) = (e.code(), e.message()) {
        return format!("{code}: {}", msg.unwrap_or("(no message)"));
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How often and how patiently a batch is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Attempts per batch (the first one included) before the write fails.
    pub attempts: u32,
    /// The first wait; each further one doubles, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Batches in flight at once.
    pub concurrency: usize,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 12,
            base_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(5),
            concurrency: 8,
        }
    }
}

impl Retry {
    /// The wait before attempt `attempt` (1 = the first retry), with jitter so that
    /// batches throttled together do not come back together.
    fn delay(&self, attempt: u32, salt: usize) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let d = exp.min(self.max_delay);
        // Deterministic jitter in [50 %, 100 %] of the wait, from the batch and attempt.
        let h = (salt as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(u64::from(attempt).wrapping_mul(0xbf58_476d_1ce4_e5b9));
        let frac = 0.5 + ((h >> 11) as f64 / (1u64 << 53) as f64) * 0.5;
        d.mul_f64(frac)
    }
}

/// What writing a run's items took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    /// Distinct items written (duplicates of an event id in one run count once: the last
    /// one wins, as in the SQLite store).
    pub items: u64,
    /// BatchWriteItem calls, retries included.
    pub calls: u64,
    /// Calls that were retries (of unprocessed items or of a throttled batch).
    pub retries: u64,
}

/// Writes `items` to `table`: duplicates of a key dropped (the last one kept: the table
/// refuses a batch that names a key twice), then batches of at most [`MAX_BATCH`],
/// `retry.concurrency` at a time, each retried as `retry` says until every item was
/// accepted. Fails when a batch fails for another reason than throttling, or when it is
/// still throttled after `retry.attempts`.
pub async fn put_all<T: KeyValueTable + ?Sized>(
    table: &T,
    items: Vec<Item>,
    retry: Retry,
) -> Result<WriteStats> {
    write_all(table, items, retry, Op::Put).await
}

/// Deletes the items of `keys` (each the string [`EVENT_ID_FIELD`] of an item) as
/// [`put_all`] writes: batches of at most [`MAX_BATCH`], retried the same way. Deleting a
/// missing item is not an error.
pub async fn delete_all<T: KeyValueTable + ?Sized>(
    table: &T,
    keys: impl IntoIterator<Item = String>,
    retry: Retry,
) -> Result<WriteStats> {
    let keys = keys
        .into_iter()
        .map(|k| Item::from([(EVENT_ID_FIELD.to_owned(), AttributeValue::S(k))]))
        .collect();
    write_all(table, keys, retry, Op::Delete).await
}

async fn write_all<T: KeyValueTable + ?Sized>(
    table: &T,
    items: Vec<Item>,
    retry: Retry,
    op: Op,
) -> Result<WriteStats> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};

    let items = dedupe(items)?;
    let total = items.len() as u64;
    let mut batches = Vec::with_capacity(items.len().div_ceil(MAX_BATCH));
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        batches.push(it.by_ref().take(MAX_BATCH).collect::<Vec<_>>());
    }
    let per_batch: Vec<(u64, u64)> = stream::iter(batches.into_iter().enumerate())
        .map(|(i, batch)| write_batch(table, batch, retry, i, op))
        .buffer_unordered(retry.concurrency.max(1))
        .try_collect()
        .await?;
    let mut stats = WriteStats {
        items: total,
        ..Default::default()
    };
    for (calls, retries) in per_batch {
        stats.calls += calls;
        stats.retries += retries;
    }
    Ok(stats)
}

/// One batch until all of it is in: (calls, retries).
async fn write_batch<T: KeyValueTable + ?Sized>(
    table: &T,
    mut batch: Vec<Item>,
    retry: Retry,
    index: usize,
    op: Op,
) -> Result<(u64, u64)> {
    let mut calls = 0u64;
    let mut attempt = 0u32;
    loop {
        calls += 1;
        let pending = batch.len();
        let sent = match op {
            Op::Put => table.batch_write(batch.clone()).await,
            Op::Delete => table.batch_delete(batch.clone()).await,
        };
        let why = match sent {
            Ok(left) if left.is_empty() => return Ok((calls, calls - 1)),
            Ok(left) => {
                if left.len() > pending {
                    bail!(
                        "the table returned {} unprocessed items of a batch of {pending}",
                        left.len()
                    );
                }
                // Progress resets the patience: only the unprocessed part goes again.
                if left.len() < pending {
                    attempt = 0;
                }
                let n = left.len();
                batch = left;
                format!("{n} of {pending} items unprocessed")
            }
            Err(WriteError::Throttled(text)) => text,
            Err(WriteError::Failed(e)) => return Err(e),
        };
        attempt += 1;
        if attempt >= retry.attempts {
            bail!(
                "batch {index} of the results table: gave up after {} attempts ({why})",
                retry.attempts
            );
        }
        tokio::time::sleep(retry.delay(attempt, index)).await;
    }
}

/// The items with one per key, the last one of each key kept, in first-seen order.
fn dedupe(items: Vec<Item>) -> Result<Vec<Item>> {
    let mut at: HashMap<String, usize> = HashMap::with_capacity(items.len());
    let mut out: Vec<Item> = Vec::with_capacity(items.len());
    for item in items {
        let key = match item.get(EVENT_ID_FIELD) {
            Some(AttributeValue::S(k)) => k.clone(),
            _ => bail!("an item has no string {EVENT_ID_FIELD} (the table's key)"),
        };
        match at.get(&key) {
            Some(&i) => out[i] = item,
            None => {
                at.insert(key, out.len());
                out.push(item);
            }
        }
    }
    Ok(out)
}

/// Creates the results table (key `request_id`, on-demand billing) when it is missing:
/// for tests and local setups; deployments create it with the template.
pub async fn ensure_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    if client
        .describe_table()
        .table_name(name)
        .send()
        .await
        .is_ok()
    {
        return Ok(());
    }
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(EVENT_ID_FIELD)
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(EVENT_ID_FIELD)
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await
        .map_err(|e| anyhow!(aws_error_text(&e)))
        .with_context(|| format!("cannot create DynamoDB table {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn item(id: &str, v: &str) -> Item {
        let mut m = Item::new();
        m.insert(EVENT_ID_FIELD.into(), AttributeValue::S(id.into()));
        m.insert("v".into(), AttributeValue::S(v.into()));
        m
    }

    /// A table that leaves the last `unprocessed` items of each of the first `flaky`
    /// calls unprocessed and throttles every `throttle_every`-th call.
    #[derive(Default)]
    struct Fake {
        stored: Mutex<HashMap<String, Item>>,
        sizes: Mutex<Vec<usize>>,
        flaky: usize,
        unprocessed: usize,
        throttle_every: usize,
        fail: bool,
    }

    #[async_trait]
    impl KeyValueTable for Fake {
        async fn batch_write(&self, items: Vec<Item>) -> Result<Vec<Item>, WriteError> {
            let call = {
                let mut sizes = self.sizes.lock().unwrap();
                sizes.push(items.len());
                sizes.len()
            };
            if items.len() > MAX_BATCH {
                return Err(WriteError::Failed(anyhow!(
                    "too many items: {}",
                    items.len()
                )));
            }
            if self.fail {
                return Err(WriteError::Failed(anyhow!("AccessDeniedException")));
            }
            if self.throttle_every > 0 && call % self.throttle_every == 0 {
                return Err(WriteError::Throttled("ThrottlingException".into()));
            }
            let keep = if call <= self.flaky {
                items.len().saturating_sub(self.unprocessed)
            } else {
                items.len()
            };
            let mut items = items;
            let left = items.split_off(keep);
            let mut stored = self.stored.lock().unwrap();
            for it in items {
                let AttributeValue::S(k) = &it[EVENT_ID_FIELD] else {
                    unreachable!()
                };
                stored.insert(k.clone(), it);
            }
            Ok(left)
        }
    }

    fn quick() -> Retry {
        Retry {
            attempts: 20,
            base_delay: Duration::from_micros(10),
            max_delay: Duration::from_millis(1),
            concurrency: 3,
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn batches_of_at_most_25_every_item_stored_once() {
        let t = Fake::default();
        let items: Vec<Item> = (0..1013).map(|i| item(&format!("k{i}"), "x")).collect();
        let stats = run(put_all(&t, items, quick())).unwrap();
        let sizes = t.sizes.lock().unwrap().clone();
        assert!(sizes.iter().all(|&n| n <= MAX_BATCH && n > 0), "{sizes:?}");
        assert_eq!(sizes.len(), 41); // 40 × 25 + 13
        assert_eq!(sizes.iter().sum::<usize>(), 1013);
        assert_eq!(t.stored.lock().unwrap().len(), 1013);
        assert_eq!(
            stats,
            WriteStats {
                items: 1013,
                calls: 41,
                retries: 0
            }
        );
    }

    #[test]
    fn unprocessed_items_and_throttling_are_retried_until_nothing_is_lost() {
        let t = Fake {
            flaky: 30,
            unprocessed: 7,
            throttle_every: 5,
            ..Default::default()
        };
        let items: Vec<Item> = (0..600).map(|i| item(&format!("k{i}"), "x")).collect();
        let stats = run(put_all(&t, items, quick())).unwrap();
        let stored = t.stored.lock().unwrap();
        assert_eq!(stored.len(), 600);
        for i in 0..600 {
            assert!(stored.contains_key(&format!("k{i}")), "k{i} lost");
        }
        let sizes = t.sizes.lock().unwrap();
        assert!(sizes.iter().all(|&n| n <= MAX_BATCH));
        assert!(stats.retries > 0, "{stats:?}");
        assert_eq!(stats.calls, sizes.len() as u64);
        assert_eq!(stats.calls, 24 + stats.retries);
    }

    #[test]
    fn duplicate_keys_are_sent_once_with_the_last_value() {
        let t = Fake::default();
        let items = vec![item("a", "1"), item("b", "1"), item("a", "2")];
        let stats = run(put_all(&t, items, quick())).unwrap();
        assert_eq!(stats.items, 2);
        let stored = t.stored.lock().unwrap();
        assert_eq!(stored["a"]["v"], AttributeValue::S("2".into()));
        assert_eq!(*t.sizes.lock().unwrap(), vec![2]);
    }

    #[test]
    fn a_table_that_keeps_throttling_fails_the_write_after_the_attempts() {
        let t = Fake {
            throttle_every: 1,
            ..Default::default()
        };
        let err = run(put_all(&t, vec![item("a", "1")], quick())).unwrap_err();
        assert!(
            format!("{err:#}").contains("gave up after 20 attempts"),
            "{err:#}"
        );
        assert_eq!(t.sizes.lock().unwrap().len(), 20);
    }

    #[test]
    fn other_errors_are_not_retried() {
        let t = Fake {
            fail: true,
            ..Default::default()
        };
        let err = run(put_all(&t, vec![item("a", "1")], quick())).unwrap_err();
        assert!(format!("{err:#}").contains("AccessDenied"), "{err:#}");
        assert_eq!(t.sizes.lock().unwrap().len(), 1);
    }

    #[test]
    fn items_carry_the_prediction_and_null_for_missing_features() {
        let date = chrono::NaiveDate::from_ymd_opt(2024, 3, 9).unwrap();
        let p = Prediction::new("LVIN 1", date, 0.25, 0.15, "m1", vec![380.5, f32::NAN]);
        let names = vec!["total_voltage_1".to_owned(), "total_current_1".to_owned()];
        let it = prediction_item(&p, &names, "s3://b/k.csv");
        assert_eq!(it[EVENT_ID_FIELD], AttributeValue::S(p.event_id.clone()));
        assert_eq!(it["date"], AttributeValue::S("2024-03-09".into()));
        assert_eq!(it["predicted_prob"], AttributeValue::N("0.25".into()));
        assert_eq!(it["alarm"], AttributeValue::Bool(true));
        assert_eq!(it["total_voltage_1"], AttributeValue::N("380.5".into()));
        assert_eq!(it["total_current_1"], AttributeValue::Null(true));
        assert_eq!(it["source"], AttributeValue::S("s3://b/k.csv".into()));
        assert_eq!(it.len(), 9);
    }

    #[test]
    fn retry_waits_grow_and_stay_bounded() {
        let r = Retry::default();
        let d1 = r.delay(1, 0);
        let d5 = r.delay(5, 0);
        assert!(d1 <= r.base_delay && d1 >= r.base_delay / 2, "{d1:?}");
        assert!(d5 > d1);
        assert!(r.delay(30, 3) <= r.max_delay);
    }
}
