-- Analyst queries over bms_predictions (predictions.sql), in the SQL that Athena (Trino)
-- and DuckDB both run: deploy/athena/check.py runs each with DuckDB over the files of a
-- `bms predict --out DIR --partition-by date` run and checks its answer against the
-- run's events.jsonl. Each query starts with a `-- name:` line; "date" is quoted since
-- it is a keyword. Add WHERE "date" BETWEEN '…' AND '…' to read fewer partitions, and
-- WHERE model_id = '…' when more than one model scores the fleet.

-- name: alarms_per_day
-- Per day and model: the vehicles and windows scored, the alarms raised and the highest
-- probability. A window is counted once even when two objects scored the same
-- (vin, date, model) (the same event_id).
SELECT
  "date",
  model_id,
  count(DISTINCT vin) AS vehicles,
  count(DISTINCT event_id) AS windows,
  count(DISTINCT CASE WHEN alarm THEN event_id END) AS alarms,
  max(predicted_prob) AS max_prob
FROM bms_predictions
GROUP BY "date", model_id
ORDER BY "date", model_id;

-- name: top_vehicles
-- The 20 vehicles most at risk: the highest probability each reached and the first day it
-- did, the days with an alarm, the first of them, and the days scored.
WITH ranked AS (
  SELECT
    vin,
    "date",
    predicted_prob,
    alarm,
    row_number() OVER (PARTITION BY vin ORDER BY predicted_prob DESC, "date") AS rank_in_vehicle
  FROM bms_predictions
)
SELECT
  vin,
  max(predicted_prob) AS max_prob,
  min(CASE WHEN rank_in_vehicle = 1 THEN "date" END) AS max_prob_date,
  count(DISTINCT CASE WHEN alarm THEN "date" END) AS alarm_days,
  min(CASE WHEN alarm THEN "date" END) AS first_alarm_date,
  count(DISTINCT "date") AS days_scored
FROM ranked
GROUP BY vin
ORDER BY max_prob DESC, vin
LIMIT 20;

-- name: probability_histogram
-- Windows per probability bin of width 0.05 ([0, 0.05), [0.05, 0.1), …, [0.95, 1]), and
-- how many of them raised an alarm. Empty bins are left out.
WITH binned AS (
  SELECT
    CAST(least(floor(CAST(predicted_prob AS double) * 20), 19) AS integer) AS bin,
    alarm
  FROM bms_predictions
)
SELECT
  bin,
  CAST(bin AS double) / 20 AS bin_start,
  CAST(bin + 1 AS double) / 20 AS bin_end,
  count(*) AS windows,
  count_if(alarm) AS alarms
FROM binned
GROUP BY bin
ORDER BY bin;
