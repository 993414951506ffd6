//! `predictions.parquet`: one row per prediction with columns `event_id, vin, date,
//! predicted_prob, alarm, model_id` and one float32 column per feature, named as in the
//! stored events (`total_voltage_14` … `min_temperature_1`).
//!
//! With partitioning, the same rows go to a Hive-style directory `predictions/`
//! `date=YYYY-MM-DD/part-0.parquet` (the `date` column then lives in the path only, as
//! DuckDB, Spark and Athena expect). Either layout is written under a temporary name and
//! moved into place by [`PredictionsParquet::finish`]; dropped unfinished, nothing changes.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float32Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float32Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bms_core::daily::{date_of_day, day_of_date};
use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::{PARQUET_DIR, PARQUET_FILE, Prediction};

fn props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        // Features, probabilities and ids are nearly all distinct: a dictionary only costs.
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("vin"), true)
        .set_column_dictionary_enabled(ColumnPath::from("model_id"), true)
        // Row groups are written as they fill, so a large run does not write its whole
        // output at the end (and readers get several groups to read in parallel).
        .set_max_row_group_row_count(Some(65_536))
        .build()
}

fn schema(names: &[String], with_date: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("vin", DataType::Utf8, false),
    ];
    if with_date {
        fields.push(Field::new("date", DataType::Date32, false));
    }
    fields.extend([
        Field::new("predicted_prob", DataType::Float32, false),
        Field::new("alarm", DataType::Boolean, false),
        Field::new("model_id", DataType::Utf8, false),
    ]);
    fields.extend(
        names
            .iter()
            .map(|n| Field::new(n.as_str(), DataType::Float32, true)),
    );
    Arc::new(Schema::new(fields))
}

fn batch(schema: &SchemaRef, preds: &[&Prediction], width: usize, with_date: bool) -> RecordBatch {
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            preds.iter().map(|p| p.event_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            preds.iter().map(|p| p.vin.as_str()),
        )),
    ];
    if with_date {
        cols.push(Arc::new(Date32Array::from_iter_values(
            preds.iter().map(|p| day_of_date(p.date) as i32),
        )));
    }
    cols.push(Arc::new(Float32Array::from_iter_values(
        preds.iter().map(|p| p.predicted_prob),
    )));
    cols.push(Arc::new(BooleanArray::from_iter(
        preds.iter().map(|p| Some(p.alarm)),
    )));
    cols.push(Arc::new(StringArray::from_iter_values(
        preds.iter().map(|p| p.model_id.as_str()),
    )));
    if preds.iter().all(|p| p.features.len() >= width) {
        // Row by row into one vector per feature: each row's features are read once
        // (column by column, a 32,768-row chunk was read 84 times over).
        let mut feats: Vec<Vec<f32>> = (0..width)
            .map(|_| Vec::with_capacity(preds.len()))
            .collect();
        for p in preds {
            for (col, &v) in feats.iter_mut().zip(&p.features) {
                col.push(v);
            }
        }
        cols.extend(
            feats
                .into_iter()
                .map(|v| Arc::new(Float32Array::from(v)) as ArrayRef),
        );
    } else {
        for k in 0..width {
            cols.push(Arc::new(Float32Array::from_iter(
                preds.iter().map(|p| p.features.get(k).copied()),
            )));
        }
    }
    RecordBatch::try_new(schema.clone(), cols).expect("columns match the schema")
}

enum Layout {
    Single {
        tmp: tempfile::NamedTempFile,
        /// `None` once closed by [`PredictionsParquet::prepare`].
        writer: Option<Box<ArrowWriter<File>>>,
    },
    Partitioned {
        tmp: tempfile::TempDir,
        writers: BTreeMap<NaiveDate, ArrowWriter<File>>,
    },
}

/// Writes predictions to `DIR/predictions.parquet` or, partitioned, `DIR/predictions/`.
pub struct PredictionsParquet {
    dir: PathBuf,
    names: Vec<String>,
    schema: SchemaRef,
    layout: Layout,
}

impl PredictionsParquet {
    /// Starts writing into `dir` (which must exist); `names` are the feature columns.
    pub fn create(dir: &Path, names: Vec<String>, partition_by_date: bool) -> Result<Self> {
        let layout = if partition_by_date {
            let tmp = tempfile::Builder::new()
                .prefix(&bms_core::io::temp_prefix())
                .tempdir_in(dir)
                .with_context(|| {
                    format!("cannot create a temporary directory in {}", dir.display())
                })?;
            Layout::Partitioned {
                tmp,
                writers: BTreeMap::new(),
            }
        } else {
            let tmp = tempfile::Builder::new()
                .prefix(&bms_core::io::temp_prefix())
                .tempfile_in(dir)
                .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
            let handle = tmp.as_file().try_clone()?;
            let writer = ArrowWriter::try_new(handle, schema(&names, true), Some(props()))?;
            Layout::Single {
                tmp,
                writer: Some(Box::new(writer)),
            }
        };
        Ok(PredictionsParquet {
            dir: dir.to_path_buf(),
            schema: schema(&names, !partition_by_date),
            names,
            layout,
        })
    }

    pub fn write(&mut self, preds: &[Prediction]) -> Result<()> {
        let width = self.names.len();
        match &mut self.layout {
            Layout::Single { writer, .. } => {
                let refs: Vec<&Prediction> = preds.iter().collect();
                writer
                    .as_mut()
                    .context("predictions.parquet is closed")?
                    .write(&batch(&self.schema, &refs, width, true))
                    .context("writing predictions.parquet")?;
            }
            Layout::Partitioned { tmp, writers } => {
                let mut by_date: BTreeMap<NaiveDate, Vec<&Prediction>> = BTreeMap::new();
                for p in preds {
                    by_date.entry(p.date).or_default().push(p);
                }
                for (date, rows) in by_date {
                    let writer = match writers.entry(date) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let part = tmp.path().join(format!("date={}", date.format("%Y-%m-%d")));
                            std::fs::create_dir_all(&part)?;
                            let file = File::create(part.join("part-0.parquet"))?;
                            e.insert(ArrowWriter::try_new(
                                file,
                                self.schema.clone(),
                                Some(props()),
                            )?)
                        }
                    };
                    writer
                        .write(&batch(&self.schema, &rows, width, false))
                        .with_context(|| format!("writing the date={date} partition"))?;
                }
            }
        }
        Ok(())
    }

    /// Closes and syncs the files under their temporary names: everything that can run
    /// out of room, done before any store of a run is published.
    pub fn prepare(&mut self) -> Result<()> {
        match &mut self.layout {
            Layout::Single { writer, .. } => {
                if let Some(w) = writer.take() {
                    let file = w.into_inner().context("closing predictions.parquet")?;
                    file.sync_all().context("syncing predictions.parquet")?;
                }
            }
            Layout::Partitioned { writers, .. } => {
                for (date, w) in std::mem::take(writers) {
                    let f = w
                        .into_inner()
                        .with_context(|| format!("closing the date={date} partition"))?;
                    f.sync_all()
                        .with_context(|| format!("syncing the date={date} partition"))?;
                }
            }
        }
        Ok(())
    }

    /// [`PredictionsParquet::prepare`]s if not done yet, then moves the files into place,
    /// replacing the previous output of either layout.
    pub fn finish(mut self) -> Result<()> {
        self.prepare()?;
        let single = self.dir.join(PARQUET_FILE);
        let parted = self.dir.join(PARQUET_DIR);
        match self.layout {
            Layout::Single { tmp, .. } => {
                tmp.persist(&single)
                    .map_err(|e| e.error)
                    .with_context(|| format!("renaming into {}", single.display()))?;
                if parted.is_dir() {
                    std::fs::remove_dir_all(&parted)
                        .with_context(|| format!("removing the old {}", parted.display()))?;
                }
            }
            Layout::Partitioned { tmp, .. } => {
                let new = tmp.keep();
                let old = if parted.exists() {
                    let old = self.dir.join(format!(".bms-old-{}", std::process::id()));
                    std::fs::rename(&parted, &old)?;
                    Some(old)
                } else {
                    None
                };
                std::fs::rename(&new, &parted)
                    .with_context(|| format!("renaming into {}", parted.display()))?;
                if let Some(old) = old {
                    std::fs::remove_dir_all(old)?;
                }
                if single.exists() {
                    std::fs::remove_file(&single)?;
                }
            }
        }
        Ok(())
    }
}

/// Predictions read back from a store directory, with their feature column names.
#[derive(Debug, Clone, Default)]
pub struct ReadPredictions {
    pub names: Vec<String>,
    pub rows: Vec<Prediction>,
}

/// Reads `DIR/predictions.parquet`, or `DIR/predictions/date=*/…` when partitioned.
pub fn read_predictions(dir: &Path) -> Result<ReadPredictions> {
    let single = dir.join(PARQUET_FILE);
    let parted = dir.join(PARQUET_DIR);
    let mut out = ReadPredictions::default();
    if single.is_file() {
        read_file(&single, None, &mut out)?;
    } else if parted.is_dir() {
        let mut parts: Vec<PathBuf> = std::fs::read_dir(&parted)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        parts.sort();
        for part in parts {
            let name = part.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(d) = name.strip_prefix("date=") else {
                continue;
            };
            let date = NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .with_context(|| format!("{}: not a date partition", part.display()))?;
            let mut files: Vec<PathBuf> = std::fs::read_dir(&part)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .collect();
            files.sort();
            for f in files {
                read_file(&f, Some(date), &mut out)?;
            }
        }
    } else {
        bail!(
            "{}: no {PARQUET_FILE} or {PARQUET_DIR}/ (run `bms predict --out {}` first)",
            dir.display(),
            dir.display()
        );
    }
    Ok(out)
}

fn read_file(path: &Path, date: Option<NaiveDate>, out: &mut ReadPredictions) -> Result<()> {
    let ctx = || format!("reading {}", path.display());
    let file = File::open(path).with_context(ctx)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(ctx)?
        .build()
        .with_context(ctx)?;
    for b in reader {
        let b = b.with_context(ctx)?;
        let schema = b.schema();
        let col = |name: &str| -> Result<&ArrayRef> {
            let i = schema
                .index_of(name)
                .with_context(|| format!("{}: no column {name}", path.display()))?;
            Ok(b.column(i))
        };
        let names: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| {
                !matches!(
                    n.as_str(),
                    "event_id" | "vin" | "date" | "predicted_prob" | "alarm" | "model_id"
                )
            })
            .collect();
        if out.names.is_empty() {
            out.names = names.clone();
        } else if out.names != names {
            bail!(
                "{}: feature columns differ from the other files",
                path.display()
            );
        }
        let ids = col("event_id")?.as_string::<i32>();
        let vins = col("vin")?.as_string::<i32>();
        let probs = col("predicted_prob")?.as_primitive::<Float32Type>();
        let alarms = col("alarm")?.as_boolean();
        let models = col("model_id")?.as_string::<i32>();
        let dates = match date {
            Some(_) => None,
            None => Some(col("date")?.as_primitive::<Date32Type>()),
        };
        let feats: Vec<&Float32Array> = names
            .iter()
            .map(|n| col(n).map(|c| c.as_primitive::<Float32Type>()))
            .collect::<Result<_>>()?;
        for i in 0..b.num_rows() {
            let date = match (date, dates) {
                (Some(d), _) => d,
                (None, Some(ds)) => date_of_day(i64::from(ds.value(i)))
                    .with_context(|| format!("{}: row {i}: bad date", path.display()))?,
                (None, None) => unreachable!("dates read when not partitioned"),
            };
            out.rows.push(Prediction {
                event_id: ids.value(i).to_owned(),
                vin: vins.value(i).to_owned(),
                date,
                predicted_prob: probs.value(i),
                alarm: alarms.value(i),
                model_id: models.value(i).to_owned(),
                features: feats
                    .iter()
                    .map(|f| if f.is_null(i) { f32::NAN } else { f.value(i) })
                    .collect(),
            });
        }
    }
    Ok(())
}
