//! `bms-lambda`: the function binary (deploy it as `bootstrap`, runtime
//! `provided.al2023`). It handles S3 ObjectCreated events, directly or through an SQS
//! queue, and API Gateway proxy events (REST v1, HTTP v2); configuration as in the
//! crate's documentation (`BMS_MODEL`, `BMS_TABLE`, …).

use bms_aws::{Config, Function};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = std::time::Instant::now();
    let config = Config::from_env()?;
    let sdk = bms_aws::sdk_config().await;
    let handler = Function::from_config(&config, &sdk)
        .await
        .inspect_err(|e| {
            eprintln!("bms-lambda: cannot start: {}", bms_batch::error_text(e));
        })?;
    eprintln!(
        "bms-lambda: model {} ready in {:.1} ms",
        handler.bucket.model.contract().model_id,
        started.elapsed().as_secs_f64() * 1e3
    );
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handler.handle(&event.payload).await.map_err(|e| {
            let text = bms_batch::error_text(&e);
            eprintln!("bms-lambda: {text}");
            Error::from(text)
        })
    }))
    .await
}
