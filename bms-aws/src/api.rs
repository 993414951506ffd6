//! Scenario 2: the API handler. API Gateway proxy events — REST API (payload v1) and
//! HTTP API (payload v2) — answered with the routes and bodies of `bms serve`:
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/predict` | the reference gateway's `{"vin", "date", "features"}` | `{"vin", "date", "predicted_prob", "alarm", "model_id"}` |
//! | `POST /invocations` | CSV or JSON rows (`Content-Type`), as `bms serve` accepts | probabilities, CSV or JSON (`Accept`) |
//! | `GET /ping` | — | `200` |
//!
//! Every answer, errors included, is a proxy response (`statusCode`, `headers`, `body`):
//! never a shape the gateway turns into a 502. Errors are `{"error": "…"}` with the
//! status `bms serve` gives the same request (400 bad body, 404, 405, 406, 415; 503 when
//! the prediction was scored but the table refused it).
//!
//! Each prediction with a key (`/v1/predict`, and `/invocations` rows given as reference
//! batch lines `VIN,Date,…`) is recorded in the results table as the bucket handler
//! records it, `source` the route: the same item for the same (vin, date, model), so a
//! retried request adds nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bms_batch::codec::{self, BadBody};
use bms_batch::store::{Prediction, event_field_names};
use bms_core::model::Model;
use serde_json::{Value, json};

use crate::table::{KeyValueTable, Retry, prediction_item, put_all};

/// A request as the two payload versions give it, headers lower-cased.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyRequest {
    /// 1 (REST API) or 2 (HTTP API).
    pub version: u8,
    pub method: String,
    /// The route's path, the stage removed.
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Whether `event` is an API Gateway proxy event (either version).
pub fn is_api_event(event: &Value) -> bool {
    event.get("httpMethod").is_some() || event.pointer("/requestContext/http/method").is_some()
}

/// Reads a proxy event of either version. `Err` names what is missing.
pub fn parse_proxy(event: &Value) -> Result<ProxyRequest, String> {
    let text = |p: &str| event.pointer(p).and_then(Value::as_str);
    let (version, method, mut path) = if let Some(m) = text("/requestContext/http/method") {
        let path = text("/rawPath")
            .or_else(|| text("/requestContext/http/path"))
            .ok_or("an HTTP API event without \"rawPath\"")?;
        (2, m, path.to_owned())
    } else {
        let m = text("/httpMethod").ok_or("not an API Gateway proxy event: no \"httpMethod\"")?;
        let path = text("/path").ok_or("a REST API event without \"path\"")?;
        (1, m, path.to_owned())
    };
    // HTTP API paths carry a named stage (`/prod/v1/predict`); `$default` has none.
    if version == 2
        && let Some(stage) = text("/requestContext/stage").filter(|s| *s != "$default")
        && let Some(rest) = path.strip_prefix(&format!("/{stage}"))
        && (rest.is_empty() || rest.starts_with('/'))
    {
        path = if rest.is_empty() {
            "/".into()
        } else {
            rest.to_owned()
        };
    }
    let mut headers = BTreeMap::new();
    if let Some(Value::Object(h)) = event.get("headers") {
        for (k, v) in h {
            if let Some(v) = v.as_str() {
                headers.insert(k.to_ascii_lowercase(), v.to_owned());
            }
        }
    }
    let body = match event.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => {
            if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|e| format!("the body is marked base64 but is not: {e}"))?
            } else {
                s.as_bytes().to_vec()
            }
        }
        Some(other) => return Err(format!("\"body\" must be a string, found {other}")),
    };
    Ok(ProxyRequest {
        version,
        method: method.to_ascii_uppercase(),
        path,
        headers,
        body,
    })
}

/// A proxy response (valid for both payload versions).
pub fn proxy_response(status: u16, content_type: Option<&str>, body: String) -> Value {
    let mut headers = serde_json::Map::new();
    if let Some(ct) = content_type {
        headers.insert("content-type".into(), Value::String(ct.to_owned()));
    }
    if status == 429 || status == 503 {
        headers.insert("retry-after".into(), Value::String("1".into()));
    }
    json!({
        "statusCode": status,
        "headers": headers,
        "body": body,
        "isBase64Encoded": false,
    })
}

/// A failed request: status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The error as a proxy response `{"error": …}`.
    pub fn response(&self) -> Value {
        proxy_response(
            self.status,
            Some("application/json"),
            json!({ "error": self.message }).to_string(),
        )
    }
}

impl From<BadBody> for ApiError {
    fn from(b: BadBody) -> Self {
        ApiError::new(400, b.0)
    }
}

/// The API function's state: loaded once per cold start.
pub struct ApiHandler {
    pub model: Arc<Model>,
    /// Alarm threshold (the model's unless overridden).
    pub threshold: f32,
    /// The results table; `None`: answers only.
    pub table: Option<Arc<dyn KeyValueTable>>,
    pub retry: Retry,
}

impl ApiHandler {
    /// Answers an event; never fails (every failure is a proxy response).
    pub async fn handle(&self, event: &Value) -> Value {
        let req = match parse_proxy(event) {
            Ok(r) => r,
            Err(why) => return ApiError::new(400, why).response(),
        };
        match self.route(&req).await {
            Ok(resp) => resp,
            Err(e) => {
                if e.status >= 500 {
                    eprintln!("bms: {} {}: {}", req.method, req.path, e.message);
                }
                e.response()
            }
        }
    }

    async fn route(&self, req: &ProxyRequest) -> Result<Value, ApiError> {
        let path = req.path.trim_end_matches('/');
        let method = req.method.as_str();
        let get = method == "GET" || method == "HEAD";
        match path {
            "/ping" if get => Ok(proxy_response(200, None, String::new())),
            "/v1/predict" if method == "POST" => self.predict(req).await,
            "/invocations" if method == "POST" => self.invocations(req).await,
            "/ping" => Err(ApiError::new(405, "method not allowed; use GET")),
            "/v1/predict" | "/invocations" => {
                Err(ApiError::new(405, "method not allowed; use POST"))
            }
            _ => Err(ApiError::new(
                404,
                format!(
                    "no route {}; routes: GET /ping, POST /invocations, POST /v1/predict",
                    req.path
                ),
            )),
        }
    }

    fn score(&self, rows: &codec::Rows) -> Result<Vec<f32>, ApiError> {
        codec::check_missing(&self.model, rows)?;
        codec::score(&self.model, rows).map_err(|e| ApiError::new(500, e))
    }

    async fn record(&self, preds: &[Prediction], route: &str) -> Result<(), ApiError> {
        let Some(table) = &self.table else {
            return Ok(());
        };
        if preds.is_empty() {
            return Ok(());
        }
        let names = event_field_names(&self.model.contract().spec);
        let items = preds
            .iter()
            .map(|p| prediction_item(p, &names, route))
            .collect();
        put_all(table.as_ref(), items, self.retry)
            .await
            .map(|_| ())
            .map_err(|e| {
                ApiError::new(
                    503,
                    format!("scored, but not recorded: {}", bms_batch::error_text(&e)),
                )
            })
    }

    async fn predict(&self, req: &ProxyRequest) -> Result<Value, ApiError> {
        let g = codec::parse_gateway(&req.body, self.model.input_width())?;
        let rows = codec::Rows {
            n: 1,
            x: g.x.clone(),
            keys: Vec::new(),
        };
        let p = self.score(&rows)?[0];
        let model_id = &self.model.contract().model_id;
        let pred = Prediction::new(&g.vin, g.date, p, self.threshold, model_id, g.x.clone());
        self.record(std::slice::from_ref(&pred), "/v1/predict")
            .await?;
        Ok(proxy_response(
            200,
            Some("application/json"),
            codec::format_gateway(&g, p, pred.alarm, model_id),
        ))
    }

    async fn invocations(&self, req: &ProxyRequest) -> Result<Value, ApiError> {
        let accept = req.headers.get("accept").map(String::as_str);
        let Some(out_format) = codec::accept_format(accept) else {
            return Err(ApiError::new(
                406,
                format!(
                    "cannot answer in {}; use text/csv or application/json",
                    accept.unwrap_or("")
                ),
            ));
        };
        let in_format = codec::content_format(req.headers.get("content-type").map(String::as_str))
            .map_err(|ct| {
                ApiError::new(
                    415,
                    format!("unsupported Content-Type {ct}; use text/csv or application/json"),
                )
            })?;
        let rows = codec::parse(in_format, &req.body, self.model.input_width())?;
        if rows.n == 0 {
            return Ok(proxy_response(204, None, String::new()));
        }
        let probs = self.score(&rows)?;
        let preds = rows.keyed_predictions(
            &probs,
            self.model.input_width(),
            self.threshold,
            &self.model.contract().model_id,
        );
        self.record(&preds, "/invocations").await?;
        Ok(proxy_response(
            200,
            Some(out_format.mime()),
            codec::format_predictions(out_format, &probs),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_payload_versions() {
        let v1 = json!({
            "resource": "/{proxy+}", "path": "/v1/predict", "httpMethod": "POST",
            "headers": {"Content-Type": "application/json"},
            "requestContext": {"stage": "prod", "path": "/prod/v1/predict"},
            "body": "eyJhIjoxfQ==", "isBase64Encoded": true
        });
        let r = parse_proxy(&v1).unwrap();
        assert_eq!(
            (r.version, r.method.as_str(), r.path.as_str()),
            (1, "POST", "/v1/predict")
        );
        assert_eq!(r.body, br#"{"a":1}"#);
        assert_eq!(r.headers["content-type"], "application/json");
        let v2 = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/prod/invocations",
            "headers": {"content-type": "text/csv"},
            "requestContext": {"stage": "prod", "http": {"method": "post", "path": "/prod/invocations"}},
            "body": "1,2\n", "isBase64Encoded": false
        });
        let r = parse_proxy(&v2).unwrap();
        assert_eq!(
            (r.version, r.method.as_str(), r.path.as_str()),
            (2, "POST", "/invocations")
        );
        assert_eq!(r.body, b"1,2\n");
        // The default stage is not part of the path, and a stage name that only
        // prefixes the first segment is not removed.
        let mut d = v2.clone();
        d["requestContext"]["stage"] = json!("$default");
        d["rawPath"] = json!("/invocations");
        assert_eq!(parse_proxy(&d).unwrap().path, "/invocations");
        d["requestContext"]["stage"] = json!("inv");
        assert_eq!(parse_proxy(&d).unwrap().path, "/invocations");
        assert!(is_api_event(&v1) && is_api_event(&v2));
        assert!(!is_api_event(&json!({"Records": []})));
        let bad =
            json!({"httpMethod": "POST", "path": "/x", "body": "!!", "isBase64Encoded": true});
        assert!(parse_proxy(&bad).unwrap_err().contains("base64"));
        assert!(
            parse_proxy(&json!({"httpMethod": "GET"}))
                .unwrap_err()
                .contains("path")
        );
    }
}
