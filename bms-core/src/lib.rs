//! `bms-core`: the battery-management-system telemetry pipeline shared by every surface of
//! the project (CLI, server, Python package, C library).
//!
//! ```text
//! frames ──► frame features ──► daily table ──► windows (+labels) ──► model ──► predictions
//! ```
//!
//! The whole pipeline on twenty days of one vehicle, scored by the reference model shipped
//! in the repository's `models/` (`consistency-ref14x6.onnx`):
//!
//! ```
//! use bms_core::{DailyConfig, FrameRef, Frames, Model, daily, windows};
//!
//! // One frame an hour for 20 days: 96 cells (cell 17 a little weak), 4 probes.
//! let mut frames = Frames::new();
//! for hour in 0..20 * 24_i64 {
//!     let soc = 40.0 + 30.0 * ((hour % 24) as f64 / 24.0);
//!     let cells: Vec<f64> = (0..96)
//!         .map(|i| 3.60 + soc * 0.004 - if i == 17 { 0.02 } else { 0.001 * (i % 5) as f64 })
//!         .collect();
//!     let frame = FrameRef {
//!         vin: "LDEMO000000000001",
//!         timestamp_ms: 1_700_000_000_000 + hour * 3_600_000,
//!         pack_voltage: cells.iter().sum(),
//!         pack_current: if hour % 24 < 8 { -20.0 } else { 12.0 },
//!         soc,
//!         cell_voltages: &cells,
//!         temperatures: &[25.0, 26.5, 24.0, 25.5],
//!         alarm_flags: Some(0),
//!     };
//!     frame.validate()?;
//!     frames.push(frame, hour as u64 + 1); // the line number errors would name
//! }
//!
//! // Frames → daily table (one row per vehicle and local day).
//! let table = daily::aggregate(&frames, &DailyConfig::default(), None)?;
//! assert!((20..=21).contains(&table.len()));
//!
//! // Daily table → windows of the model's contract (context, features, fill) → model.
//! let model_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/consistency-ref14x6.onnx");
//! let model = Model::load(model_path)?;
//! let batch = windows(&table, &model.contract().spec)?;
//! assert!(!batch.is_empty());
//! assert_eq!(batch.x.ncols(), model.input_width());
//! let probabilities = model.predict(batch.x.view())?;
//! assert_eq!(probabilities.len(), batch.len());
//! assert!(probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
//! let alarms = probabilities.iter().filter(|p| **p >= model.contract().threshold).count();
//! assert!(alarms <= batch.len());
//! # Ok::<(), bms_core::BmsError>(())
//! ```
//!
//! Each stage lives in its own module and is usable on its own. The data and feature
//! contract is `docs/SPEC.md`; this crate is its reference implementation.
//!
//! Cargo features (all on by default): `parquet` (Parquet/Arrow I/O, [`io::parquet`]),
//! `simulate` (the fleet simulator) and `parallel` (rayon's thread pool for large
//! tables). An on-vehicle or serverless build turns off what it does not use:
//! `default-features = false` leaves features, daily aggregation, windows, CSV I/O and
//! the model.

pub mod daily;
pub mod error;
pub mod evaluate;
pub mod features;
pub mod frame;
pub mod gbt32960;
pub mod io;
pub mod model;
pub mod monitor;
pub mod ocv;
#[cfg(feature = "simulate")]
pub mod simulate;
pub mod window;

pub use daily::{
    DailyAggregator, DailyColumn, DailyConfig, DailyRow, DailyTable, UtcOffset, VehicleAggregator,
};
pub use error::{BmsError, Location, Result};
pub use features::{FeatureConfig, FrameFeatures, frame_features};
pub use frame::{Frame, FrameRef, Frames};
pub use model::{ContractSource, Model, ModelContract};
pub use monitor::{ClosedDay, Monitor, MonitorConfig};
pub use ocv::{Chemistry, OcvCurve};
#[cfg(feature = "simulate")]
pub use simulate::{SimConfig, SimOutput, VehicleTruth, simulate_daily};
pub use window::{
    ColumnPlan, ColumnWindows, DailyColumns, WindowBatch, WindowKey, WindowSpec, windows,
    windows_of_columns,
};
