//! bms on AWS: objects in S3 ([`objects`]), the DynamoDB results table ([`table`]), the
//! bucket-event function handler ([`bucket`]) and the API Gateway handler ([`api`]), run
//! by the `bms-lambda` binary (a custom runtime, `provided.al2023`; [`Function`] picks the
//! handler by the event's shape) or called directly.
//!
//! The AWS SDK and object_store's S3 client are dependencies of this crate only: the
//! command line, the Python wheel and the C library build without them.
//!
//! Configuration of the function (environment variables, read once per cold start by
//! [`Config::from_env`]):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `BMS_MODEL` | the model: a path, or `s3://bucket/key` | the shipped reference model |
//! | `BMS_TABLE` | the DynamoDB results table | none: objects only |
//! | `BMS_RESULTS_PREFIX` | key prefix of the result objects | `results/` |
//! | `BMS_OUTPUT_BUCKET` | the bucket of the result objects | the input's bucket |
//! | `BMS_THRESHOLD` | alarm threshold instead of the model's | the model's |
//!
//! Credentials, region and endpoint come from the standard AWS chain (`AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`…, profiles, the function's role; `AWS_ENDPOINT_URL` for a local
//! S3/DynamoDB-compatible server).

pub mod api;
pub mod bucket;
pub mod objects;
pub mod table;

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use bms_core::model::Model;
use serde_json::Value;

pub use api::ApiHandler;
pub use bucket::BucketHandler;
pub use objects::{Buckets, S3Url};
pub use table::{DynamoTable, KeyValueTable, Retry};

/// The reference model, bundled with the function.
pub const SHIPPED_MODEL: &[u8] = include_bytes!("../../models/consistency-ref14x6.onnx");

/// What the function reads from its environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub model: Option<String>,
    pub table: Option<String>,
    pub results_prefix: Option<String>,
    pub output_bucket: Option<String>,
    pub threshold: Option<f32>,
}

impl Config {
    /// From the `BMS_*` variables (an empty one counts as unset).
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let threshold = match var("BMS_THRESHOLD") {
            Some(t) => Some(
                t.parse::<f32>()
                    .ok()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| anyhow!("BMS_THRESHOLD={t:?} is not a probability"))?,
            ),
            None => None,
        };
        Ok(Config {
            model: var("BMS_MODEL"),
            table: var("BMS_TABLE"),
            results_prefix: var("BMS_RESULTS_PREFIX"),
            output_bucket: var("BMS_OUTPUT_BUCKET"),
            threshold,
        })
    }
}

/// The SDK configuration of the standard chain.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// Loads the model `spec` names (a path or `s3://…`; the shipped model when `None`),
/// its contract checked.
pub async fn load_model(spec: Option<&str>, buckets: &Buckets) -> Result<Model> {
    let model = load_any_model(spec, buckets).await?;
    // Both handlers compare its output with the threshold.
    model
        .require_probability()
        .with_context(|| format!("BMS_MODEL={}", spec.unwrap_or("(the shipped model)")))?;
    Ok(model)
}

async fn load_any_model(spec: Option<&str>, buckets: &Buckets) -> Result<Model> {
    match spec {
        None => Model::from_bytes(SHIPPED_MODEL).context("the shipped model"),
        Some(s) if S3Url::is_s3(s) => {
            let url = S3Url::parse(s)?;
            let store = buckets.get(&url.bucket)?;
            let bytes = objects::get_if_exists(store.as_ref(), &url)
                .await?
                .ok_or_else(|| anyhow!("BMS_MODEL={s}: no such object"))?;
            Model::from_bytes(&bytes).with_context(|| format!("BMS_MODEL={s}"))
        }
        Some(path) => Model::load(path).with_context(|| format!("BMS_MODEL={path}")),
    }
}

impl BucketHandler {
    /// The handler `config` describes, with clients from `sdk`: what a cold start does.
    pub async fn from_config(config: &Config, sdk: &aws_config::SdkConfig) -> Result<Self> {
        let buckets = Buckets::new(sdk, std::env::var("AWS_ENDPOINT_URL_S3").ok());
        let model = load_model(config.model.as_deref(), &buckets).await?;
        let table: Option<Arc<dyn KeyValueTable>> = config.table.as_ref().map(|name| {
            Arc::new(DynamoTable::new(aws_sdk_dynamodb::Client::new(sdk), name))
                as Arc<dyn KeyValueTable>
        });
        let mut prefix = config
            .results_prefix
            .clone()
            .unwrap_or_else(|| "results/".to_owned());
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(BucketHandler {
            model: Arc::new(model),
            job: bms_batch::Job {
                threshold: config.threshold,
                ..Default::default()
            },
            buckets,
            table,
            retry: Retry::default(),
            results_prefix: prefix,
            output_bucket: config.output_bucket.clone(),
        })
    }
}

/// The function: both handlers over one model and one table, loaded once per cold start.
pub struct Function {
    pub bucket: BucketHandler,
    pub api: ApiHandler,
}

impl Function {
    /// What a cold start does: the model loaded (and its contract checked), the clients
    /// made.
    pub async fn from_config(config: &Config, sdk: &aws_config::SdkConfig) -> Result<Self> {
        let bucket = BucketHandler::from_config(config, sdk).await?;
        let api = ApiHandler {
            model: bucket.model.clone(),
            threshold: config
                .threshold
                .unwrap_or(bucket.model.contract().threshold),
            table: bucket.table.clone(),
            retry: bucket.retry,
        };
        Ok(Function { bucket, api })
    }

    /// An API Gateway proxy event (REST v1 or HTTP v2) gets a proxy response; anything
    /// else is read as an S3 (or SQS-wrapped S3) event.
    pub async fn handle(&self, event: &Value) -> Result<Value> {
        if api::is_api_event(event) {
            Ok(self.api.handle(event).await)
        } else {
            self.bucket.handle(event).await
        }
    }
}
