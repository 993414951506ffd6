//! The API Gateway handler called with recorded proxy events (REST API v1, HTTP API v2;
//! `tests/events/`), the results table on a moto server: answers equal to what
//! `bms predict` computes for the same rows, one item per keyed prediction, retried
//! requests adding nothing, and every error a proxy response with a JSON body.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use bms_aws::api::ApiHandler;
use bms_aws::table::{self, KeyValueTable};
use bms_aws::{DynamoTable, Function, Retry};
use bms_batch::store::parquet::read_predictions;
use bms_batch::store::{Prediction, event_id};
use bms_batch::{Job, NoObserver};
use bms_core::model::Model;
use serde_json::{Value, json};

mod common;
use common::{Moto, daily_csv, run, scan_items};

fn recorded(name: &str) -> Value {
    let path = format!("{}/tests/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Predictions as `bms predict --out` makes them from a simulated fleet: the rows to send
/// and the answers to expect.
fn predictions(vehicles: usize) -> (Arc<Model>, Vec<Prediction>) {
    let model = Arc::new(Model::from_bytes(bms_aws::SHIPPED_MODEL).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let daily = daily_csv(tmp.path(), vehicles, 40, 11);
    let out = tmp.path().join("out");
    bms_batch::score_to_dir(&daily, &model, &Job::default(), &out, &NoObserver).unwrap();
    (model, read_predictions(&out).unwrap().rows)
}

fn features_csv(p: &Prediction) -> String {
    p.features
        .iter()
        .map(|v| {
            if v.is_nan() {
                String::new()
            } else {
                format!("{v:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn body(resp: &Value) -> Value {
    serde_json::from_str(resp["body"].as_str().unwrap()).unwrap_or(Value::Null)
}

#[test]
fn api_events_of_both_versions_answer_as_bms_predict_and_record_each_prediction() {
    let (model, preds) = predictions(8);
    assert!(preds.len() > 100);
    run(async {
        let moto = Moto::start();
        let sdk = moto.sdk().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        table::ensure_table(&client, "results").await.unwrap();
        let h = ApiHandler {
            model: model.clone(),
            threshold: model.contract().threshold,
            table: Some(Arc::new(DynamoTable::new(client.clone(), "results"))),
            retry: Retry::default(),
        };

        // REST API (v1): the reference gateway's body, features as a string.
        let p = &preds[0];
        let mut event = recorded("apigw-rest-v1.json");
        event["body"] = json!(
            json!({"vin": p.vin, "date": p.date.to_string(), "features": features_csv(p)})
                .to_string()
        );
        let resp = h.handle(&event).await;
        assert_eq!(resp["statusCode"], 200, "{resp:#}");
        assert_eq!(resp["headers"]["content-type"], "application/json");
        let b = body(&resp);
        assert_eq!(b["vin"], p.vin.as_str());
        assert_eq!(b["date"], p.date.to_string());
        assert_eq!(
            b["predicted_prob"].as_f64().unwrap() as f32,
            p.predicted_prob
        );
        assert_eq!(b["alarm"], p.alarm);
        assert_eq!(b["model_id"], model.contract().model_id.as_str());
        let got = scan_items(&client, "results").await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["request_id"], AttributeValue::S(p.event_id.clone()));
        assert_eq!(got[0]["source"], AttributeValue::S("/v1/predict".into()));
        assert_eq!(got[0]["alarm"], AttributeValue::Bool(p.alarm));

        // HTTP API (v2): reference batch lines as CSV, base64-encoded as the gateway may
        // send them, answered in JSON (Accept).
        let lines: String = preds
            .iter()
            .map(|p| format!("{},{},{}\n", p.vin, p.date, features_csv(p)))
            .collect();
        let mut event = recorded("apigw-http-v2.json");
        event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&lines));
        event["isBase64Encoded"] = json!(true);
        let resp = h.handle(&event).await;
        assert_eq!(resp["statusCode"], 200, "{resp:#}");
        assert_eq!(resp["headers"]["content-type"], "application/json");
        let probs: Vec<f32> = body(&resp)["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let expected: Vec<f32> = preds.iter().map(|p| p.predicted_prob).collect();
        assert_eq!(probs, expected);
        // One item per keyed row (the first one again, unchanged), the same for a retry.
        let got = scan_items(&client, "results").await;
        assert_eq!(got.len(), preds.len());
        let resp2 = h.handle(&event).await;
        assert_eq!(resp2["body"], resp["body"]);
        let again = scan_items(&client, "results").await;
        assert_eq!(again.len(), preds.len());
        for it in &again {
            let AttributeValue::S(id) = &it["request_id"] else {
                panic!()
            };
            let p = preds.iter().find(|p| &p.event_id == id).unwrap();
            let AttributeValue::N(prob) = &it["predicted_prob"] else {
                panic!()
            };
            assert_eq!(prob.parse::<f32>().unwrap(), p.predicted_prob);
            assert_eq!(
                *id,
                event_id(&p.vin, p.date, &model.contract().model_id),
                "the item key is the deterministic event id"
            );
        }

        // Plain feature rows (no key) are answered in CSV and not recorded.
        let mut event = recorded("apigw-http-v2.json");
        event["headers"]["accept"] = json!("text/csv");
        event["body"] = json!(format!(
            "{}\n{}\n",
            features_csv(&preds[1]),
            features_csv(&preds[2])
        ));
        let resp = h.handle(&event).await;
        assert_eq!(resp["statusCode"], 200, "{resp:#}");
        assert_eq!(resp["headers"]["content-type"], "text/csv");
        let csv: Vec<f32> = resp["body"]
            .as_str()
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(csv, vec![preds[1].predicted_prob, preds[2].predicted_prob]);
        assert_eq!(scan_items(&client, "results").await.len(), preds.len());
    });
}

#[test]
fn every_error_is_a_proxy_response_with_a_json_message() {
    let model = Arc::new(Model::from_bytes(bms_aws::SHIPPED_MODEL).unwrap());
    let width = model.input_width();
    let row = vec!["0.5"; width].join(",");
    run(async {
        let moto = Moto::start();
        let sdk = moto.sdk().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        // No such table: the prediction is scored but cannot be recorded.
        let missing: Arc<dyn KeyValueTable> = Arc::new(DynamoTable::new(client, "no-such-table"));
        let h = ApiHandler {
            model: model.clone(),
            threshold: 0.5,
            table: Some(missing),
            retry: Retry::default(),
        };
        let v1 = recorded("apigw-rest-v1.json");
        let v2 = recorded("apigw-http-v2.json");
        let case = |base: &Value, edit: &dyn Fn(&mut Value)| {
            let mut e = base.clone();
            edit(&mut e);
            e
        };
        let width_msg = format!("line 1: expected {width} values");
        let cases: Vec<(Value, u16, &str)> = vec![
            (
                case(&v1, &|e| e["body"] = json!("{\"vin\": ")),
                400,
                "invalid JSON",
            ),
            (
                case(&v1, &|e| {
                    e["body"] = json!(r#"{"vin": "V1", "date": "2024-13-01", "features": "1"}"#)
                }),
                400,
                "'2024-13-01' is not a YYYY-MM-DD date",
            ),
            (
                case(&v1, &|e| {
                    e["body"] = json!(format!(
                        r#"{{"vin": "V1", "date": "2024-03-01", "features": "{row}"}}"#
                    ))
                }),
                503,
                "scored, but not recorded",
            ),
            (
                case(&v1, &|e| e["httpMethod"] = json!("GET")),
                405,
                "use POST",
            ),
            (
                case(&v1, &|e| e["path"] = json!("/v2/predict")),
                404,
                "no route /v2/predict",
            ),
            (
                case(&v1, &|e| {
                    e["body"] = json!("not base64!");
                    e["isBase64Encoded"] = json!(true);
                }),
                400,
                "base64",
            ),
            (
                case(&v2, &|e| {
                    e["headers"]["content-type"] = json!("application/x-protobuf");
                    e["body"] = json!(row.clone());
                }),
                415,
                "unsupported Content-Type application/x-protobuf",
            ),
            (
                case(&v2, &|e| {
                    e["headers"]["accept"] = json!("application/xml");
                    e["body"] = json!(row.clone());
                }),
                406,
                "cannot answer in application/xml",
            ),
            (case(&v2, &|e| e["body"] = json!("1,2\n")), 400, &width_msg),
            (
                case(&v2, &|e| {
                    e["body"] = json!(format!("V1,2024-03-01,{row}\n"))
                }),
                503,
                "no-such-table",
            ),
        ];
        for (event, status, needle) in cases {
            let resp = h.handle(&event).await;
            assert_eq!(resp["statusCode"], status, "{resp:#}");
            assert_eq!(
                resp["headers"]["content-type"], "application/json",
                "{resp:#}"
            );
            assert_eq!(resp["isBase64Encoded"], false);
            let msg = body(&resp)["error"].as_str().unwrap_or("").to_owned();
            assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
            if status == 503 {
                assert_eq!(resp["headers"]["retry-after"], "1");
            }
        }
        // Rows without keys need no table: answered.
        let ok = case(&v2, &|e| e["body"] = json!(format!("{row}\n")));
        assert_eq!(h.handle(&ok).await["statusCode"], 200);
        // An empty body has nothing to score.
        assert_eq!(h.handle(&v2).await["statusCode"], 204);
        let ping = case(&v2, &|e| {
            e["rawPath"] = json!("/ping");
            e["requestContext"]["http"]["method"] = json!("GET");
        });
        assert_eq!(h.handle(&ping).await["statusCode"], 200);
    });
}

#[test]
fn a_missing_value_is_refused_for_a_model_that_does_not_handle_it_and_scored_by_one_that_does() {
    // logreg_n1: MatMul → Add → Sigmoid (a NaN would give NaN); the shipped tree model
    // sends a missing value down its branch.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/fixtures/logreg_n1.onnx"
    );
    let linear = Arc::new(Model::load(fixture).unwrap());
    let tree = Arc::new(Model::from_bytes(bms_aws::SHIPPED_MODEL).unwrap());
    assert!(!linear.handles_missing() && tree.handles_missing());
    let v2 = recorded("apigw-http-v2.json");
    run(async {
        for (model, status) in [(linear, 400), (tree, 200)] {
            let width = model.input_width();
            let mut values = vec!["0.5".to_owned(); width];
            values[2] = "nan".into();
            let first = vec!["0.5"; width].join(",");
            let mut event = v2.clone();
            event["body"] = json!(format!("{first}\n{}\n", values.join(",")));
            let h = ApiHandler {
                model,
                threshold: 0.5,
                table: None,
                retry: Retry::default(),
            };
            let resp = h.handle(&event).await;
            assert_eq!(resp["statusCode"], status, "{resp:#}");
            if status == 400 {
                let msg = body(&resp)["error"].as_str().unwrap_or("").to_owned();
                assert!(
                    msg.contains("row 2, value 3") && msg.contains("missing value"),
                    "{msg}"
                );
            } else {
                let p = body(&resp)["predictions"].as_array().unwrap().clone();
                assert_eq!(p.len(), 2, "{resp:#}");
                assert!(
                    p.iter().all(|v| v.as_f64().is_some_and(f64::is_finite)),
                    "{p:?}"
                );
            }
        }
    });
}

#[test]
fn the_function_sends_api_events_to_the_api_handler_and_the_rest_to_the_bucket_handler() {
    run(async {
        let moto = Moto::start();
        let sdk = moto.sdk().await;
        let f = Function::from_config(&bms_aws::Config::default(), &sdk)
            .await
            .unwrap();
        assert_eq!(f.api.threshold, f.bucket.model.contract().threshold);
        let mut ping = recorded("apigw-rest-v1.json");
        ping["path"] = json!("/ping");
        ping["httpMethod"] = json!("GET");
        let resp = f.handle(&ping).await.unwrap();
        assert_eq!(resp["statusCode"], 200);
        let e = f.handle(&json!({"hello": 1})).await.unwrap_err();
        assert!(format!("{e:#}").contains("no Records"), "{e:#}");
    });
}
