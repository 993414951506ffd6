//! The feature contract a model carries in its ONNX `metadata_props` (SPEC §7).

use sha2::{Digest, Sha256};

use crate::daily::DailyColumn;
use crate::error::{BmsError, Result};
use crate::window::WindowSpec;

/// `metadata_props` key: days of history per window.
pub const KEY_CONTEXT_DAYS: &str = "bms.context_days";
/// `metadata_props` key: days ahead the label looks.
pub const KEY_HORIZON_DAYS: &str = "bms.horizon_days";
/// `metadata_props` key: comma-separated daily column names.
pub const KEY_FEATURES: &str = "bms.features";
/// `metadata_props` key: value replacing NaN features.
pub const KEY_FILL_VALUE: &str = "bms.fill_value";
/// `metadata_props` key: alarm threshold on the probability.
pub const KEY_THRESHOLD: &str = "bms.threshold";
/// `metadata_props` key: the model's identifier.
pub const KEY_MODEL_ID: &str = "bms.model_id";
/// `metadata_props` key: `probability` declares the output a probability, for a graph
/// whose last operator does not say so (see `Model::require_probability`).
pub const KEY_OUTPUT: &str = "bms.output";

/// Every `bms.*` key a contract may hold; any other is refused.
pub const KNOWN_KEYS: [&str; 7] = [
    KEY_CONTEXT_DAYS,
    KEY_HORIZON_DAYS,
    KEY_FEATURES,
    KEY_FILL_VALUE,
    KEY_THRESHOLD,
    KEY_MODEL_ID,
    KEY_OUTPUT,
];

/// Default alarm threshold.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Where a [`ModelContract`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContractSource {
    /// The model's `bms.*` metadata (keys it lacks take their defaults).
    Metadata,
    /// The model has no `bms.*` metadata: the reference defaults.
    Defaulted,
}

/// What a model expects as input and how to read its output.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelContract {
    /// How windows are built for this model; `spec.width()` is the model's input width.
    pub spec: WindowSpec,
    /// Alarm when probability ≥ threshold.
    pub threshold: f32,
    /// Identifier stamped on predictions.
    pub model_id: String,
    /// Whether the contract was read or defaulted.
    pub source: ContractSource,
    /// `bms.output = probability`: the output is declared a probability.
    pub output_is_probability: bool,
}

/// The model id of a plain export: `onnx-` and the first 12 hex digits of the file's
/// SHA-256.
pub fn default_model_id(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("onnx-{hex}")
}

fn bad_value(key: &str, value: &str, expected: &str) -> BmsError {
    BmsError::model(format!("metadata {key} = {value:?} is not {expected}"))
}

impl ModelContract {
    /// Reads the contract from `metadata_props` entries (key, value); `bytes` is the
    /// model file, used for a default model id.
    pub fn from_metadata<'a>(
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
        bytes: &[u8],
    ) -> Result<Self> {
        let mut contract = ModelContract {
            spec: WindowSpec::default(),
            threshold: DEFAULT_THRESHOLD,
            model_id: String::new(),
            source: ContractSource::Defaulted,
            output_is_probability: false,
        };
        for (key, value) in props {
            if !key.starts_with("bms.") {
                continue;
            }
            contract.source = ContractSource::Metadata;
            let v = value.trim();
            match key {
                KEY_CONTEXT_DAYS => {
                    contract.spec.context = v
                        .parse()
                        .map_err(|_| bad_value(key, value, "a whole number of days"))?;
                }
                KEY_HORIZON_DAYS => {
                    contract.spec.horizon = v
                        .parse()
                        .map_err(|_| bad_value(key, value, "a whole number of days"))?;
                }
                KEY_FEATURES => {
                    contract.spec.features = DailyColumn::parse_list(v)
                        .map_err(|e| BmsError::model(format!("metadata {key} = {value:?}: {e}")))?;
                }
                KEY_FILL_VALUE => {
                    contract.spec.fill =
                        v.parse().map_err(|_| bad_value(key, value, "a number"))?;
                }
                KEY_THRESHOLD => {
                    let t: f32 = v.parse().map_err(|_| bad_value(key, value, "a number"))?;
                    if !(0.0..=1.0).contains(&t) {
                        return Err(bad_value(key, value, "a probability in [0, 1]"));
                    }
                    contract.threshold = t;
                }
                KEY_OUTPUT => {
                    if v != "probability" {
                        return Err(bad_value(key, value, "`probability`"));
                    }
                    contract.output_is_probability = true;
                }
                KEY_MODEL_ID => {
                    if v.is_empty() {
                        return Err(bad_value(key, value, "a non-empty id"));
                    }
                    contract.model_id = v.to_owned();
                }
                _ => {
                    // A misspelt key would otherwise leave its default in force unnoticed.
                    return Err(BmsError::model(format!(
                        "metadata {key} is not a contract key (known: {})",
                        KNOWN_KEYS.join(", ")
                    )));
                }
            }
        }
        contract.spec.validate().map_err(|e| {
            // Name the key whose value is wrong.
            let key = match () {
                _ if contract.spec.context == 0 || contract.spec.context > 100_000 => {
                    KEY_CONTEXT_DAYS
                }
                _ if contract.spec.horizon == 0 || contract.spec.horizon > 100_000 => {
                    KEY_HORIZON_DAYS
                }
                _ if contract.spec.features.is_empty() => KEY_FEATURES,
                _ => KEY_FILL_VALUE,
            };
            BmsError::model(format!("metadata {key}: {e}"))
        })?;
        if contract.model_id.is_empty() {
            contract.model_id = default_model_id(bytes);
        }
        Ok(contract)
    }
}
