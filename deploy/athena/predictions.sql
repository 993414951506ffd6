-- Amazon Athena (or any Glue/Hive catalog client): the predictions bms-lambda writes as
-- Hive-partitioned Parquet, `<results-prefix>predictions/date=YYYY-MM-DD/{run}.parquet`
-- (the same files `bms predict --out DIR --partition-by date` writes locally as
-- `DIR/predictions/date=YYYY-MM-DD/part-0.parquet`).
--
-- Placeholders: replace `<bucket>` with the bucket the results go to (the stack's output
-- ResultsUri without its prefix: the input bucket, or OutputBucketName) and
-- `<results-prefix>` with ResultsPrefix (default `results/`), in LOCATION and in
-- storage.location.template alike, e.g.
--
--   sed -e 's|<bucket>|my-bucket|g' -e 's|<results-prefix>|results/|g' predictions.sql
--
-- Partitions are projected, not crawled: no MSCK REPAIR, no Glue crawler, and a day the
-- function writes is queryable at once. Keep projection.date.range's start at or before
-- the oldest scored day (days outside the range are not read). Filter on "date" to read
-- fewer days: WHERE "date" BETWEEN '2024-03-01' AND '2024-03-31' (ISO strings compare
-- as dates). Columns are matched to the Parquet files by name; the partition column is in
-- the path only, not in the files. deploy/athena/check.py holds this list to the files'
-- schema.
--
-- Features: the window's 84 values, named as in the stored-event JSON (suffix 14 is the
-- oldest day, 1 the newest), the fill value (summary.json fill_value, -1) for a day
-- without data.

CREATE EXTERNAL TABLE IF NOT EXISTS bms_predictions (
  event_id string COMMENT 'id of the prediction: SHA-256 of (vin, date, model_id) as a UUID, request_id in the table and the events',
  vin string COMMENT 'vehicle identification number',
  predicted_prob float COMMENT 'probability of a cell-consistency alarm in the next 14 days',
  alarm boolean COMMENT 'predicted_prob >= the threshold of the run',
  model_id string COMMENT 'the model that scored the window',
  total_voltage_14 float,
  total_current_14 float,
  cell_max_voltage_14 float,
  cell_min_voltage_14 float,
  max_temperature_14 float,
  min_temperature_14 float,
  total_voltage_13 float,
  total_current_13 float,
  cell_max_voltage_13 float,
  cell_min_voltage_13 float,
  max_temperature_13 float,
  min_temperature_13 float,
  total_voltage_12 float,
  total_current_12 float,
  cell_max_voltage_12 float,
  cell_min_voltage_12 float,
  max_temperature_12 float,
  min_temperature_12 float,
  total_voltage_11 float,
  total_current_11 float,
  cell_max_voltage_11 float,
  cell_min_voltage_11 float,
  max_temperature_11 float,
  min_temperature_11 float,
  total_voltage_10 float,
  total_current_10 float,
  cell_max_voltage_10 float,
  cell_min_voltage_10 float,
  max_temperature_10 float,
  min_temperature_10 float,
  total_voltage_9 float,
  total_current_9 float,
  cell_max_voltage_9 float,
  cell_min_voltage_9 float,
  max_temperature_9 float,
  min_temperature_9 float,
  total_voltage_8 float,
  total_current_8 float,
  cell_max_voltage_8 float,
  cell_min_voltage_8 float,
  max_temperature_8 float,
  min_temperature_8 float,
  total_voltage_7 float,
  total_current_7 float,
  cell_max_voltage_7 float,
  cell_min_voltage_7 float,
  max_temperature_7 float,
  min_temperature_7 float,
  total_voltage_6 float,
  total_current_6 float,
  cell_max_voltage_6 float,
  cell_min_voltage_6 float,
  max_temperature_6 float,
  min_temperature_6 float,
  total_voltage_5 float,
  total_current_5 float,
  cell_max_voltage_5 float,
  cell_min_voltage_5 float,
  max_temperature_5 float,
  min_temperature_5 float,
  total_voltage_4 float,
  total_current_4 float,
  cell_max_voltage_4 float,
  cell_min_voltage_4 float,
  max_temperature_4 float,
  min_temperature_4 float,
  total_voltage_3 float,
  total_current_3 float,
  cell_max_voltage_3 float,
  cell_min_voltage_3 float,
  max_temperature_3 float,
  min_temperature_3 float,
  total_voltage_2 float,
  total_current_2 float,
  cell_max_voltage_2 float,
  cell_min_voltage_2 float,
  max_temperature_2 float,
  min_temperature_2 float,
  total_voltage_1 float,
  total_current_1 float,
  cell_max_voltage_1 float,
  cell_min_voltage_1 float,
  max_temperature_1 float,
  min_temperature_1 float
)
PARTITIONED BY (
  `date` string COMMENT 'the first predicted day of the window, YYYY-MM-DD'
)
STORED AS PARQUET
LOCATION 's3://<bucket>/<results-prefix>predictions/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.date.type' = 'date',
  'projection.date.format' = 'yyyy-MM-dd',
  'projection.date.range' = '2020-01-01,NOW',
  'projection.date.interval' = '1',
  'projection.date.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://<bucket>/<results-prefix>predictions/date=${date}/'
);
