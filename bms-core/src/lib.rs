//! `bms-core`: the battery-management-system telemetry pipeline shared by every surface of
//! the project (CLI, server, Python package, C library).
//!
//! ```text
//! frames ──► frame features ──► daily table ──► windows (+labels) ──► model ──► predictions
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
