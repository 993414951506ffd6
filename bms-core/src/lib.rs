//! `bms-core`: the battery-management-system telemetry pipeline shared by every surface of
//! the project (CLI, server, Python package, C library).
//!
//! ```text
//! frames ──► frame features ──► daily table ──► windows (+labels) ──► model ──► predictions
//! ```
//!
//! Each stage lives in its own module and is usable on its own. The data and feature
//! contract is SPEC.md; this crate is its reference implementation.

pub mod daily;
pub mod error;
pub mod features;
pub mod frame;
pub mod io;
pub mod model;
pub mod ocv;
pub mod simulate;
pub mod window;

pub use daily::{
    DailyAggregator, DailyColumn, DailyConfig, DailyRow, DailyTable, UtcOffset, VehicleAggregator,
};
pub use error::{BmsError, Location, Result};
pub use features::{FeatureConfig, FrameFeatures, frame_features};
pub use frame::{Frame, FrameRef, Frames};
pub use model::{ContractSource, Model, ModelContract};
pub use ocv::{Chemistry, OcvCurve};
pub use simulate::{SimConfig, SimOutput, VehicleTruth, simulate_daily};
pub use window::{
    ColumnPlan, ColumnWindows, DailyColumns, WindowBatch, WindowKey, WindowSpec, windows,
    windows_of_columns,
};
