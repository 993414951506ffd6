/*
 * Streams a frame CSV (as `bms simulate --frames` writes it) through one bms_monitor per
 * vehicle, the way a telematics unit would feed its own frames, and prints one line per
 * closed day:
 *
 *   vin,date,frames,alarm_day,predicted_prob,predicted_alarm
 *
 * `alarm_day` is 1 when a frame of that day carried the consistency alarm (bit 10), 0
 * when none did, empty for a day without frames;
 * `predicted_prob` is the model's probability for the window of the C days ending with
 * that day, i.e. of an alarm in the next H days (empty while fewer than C days are
 * known, or for a day that closed together with later days without frames).
 *
 * Build (from the repository root, after `cargo build --release -p bms-ffi`):
 *   gcc -O2 -Ibms-ffi/include examples/c/monitor.c target/release/libbms.a -lm -lpthread -ldl -Wl,-z,noexecstack,--gc-sections -o monitor
 * Run:
 *   ./monitor models/consistency-ref14x6.onnx frames.csv [utc-offset-seconds]
 */
#include "frames_csv.h"

#include <bms.h>

static int report(bms_monitor *m, const char *vin, uint64_t *closed_before, float threshold) {
    uint64_t closed = 0;
    size_t held = 0;
    if (bms_monitor_days_closed(m, &closed) != BMS_STATUS_OK || bms_monitor_days(m, &held) != BMS_STATUS_OK) {
        return -1;
    }
    uint64_t fresh = closed - *closed_before;
    *closed_before = closed;
    if (fresh == 0) {
        return 0;
    }
    float prob = 0.0f;
    bms_status s = bms_monitor_predict(m, &prob);
    if (s != BMS_STATUS_OK && s != BMS_STATUS_NOT_READY) {
        fprintf(stderr, "%s: %s\n", vin, bms_last_error_message());
        return -1;
    }
    /* Oldest first; days that fell out of the ring (long gaps) are not printed. */
    size_t shown = fresh < held ? (size_t)fresh : held;
    for (size_t age = shown; age-- > 0;) {
        bms_daily_row row;
        if (bms_monitor_day(m, age, &row) != BMS_STATUS_OK) {
            return -1;
        }
        char date[11];
        day_to_date(row.day, date);
        printf("%s,%s,%.0f,%s,", vin, date, row.frames, isnan(row.label) ? "" : row.label == 1.0 ? "1" : "0");
        if (age == 0 && s == BMS_STATUS_OK) {
            printf("%.6f,%d\n", prob, prob >= threshold);
        } else {
            printf(",\n");
        }
    }
    return 0;
}

/* The first instant of the calendar day after the one holding `ts` (both in ms, UTC). */
static int64_t next_midnight(int64_t ts, int32_t utc_offset_seconds) {
    int64_t off = (int64_t)utc_offset_seconds * 1000;
    return ((ts + off) / 86400000 + 1) * 86400000 - off;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL.onnx FRAMES.csv [UTC_OFFSET_SECONDS]\n", argv[0]);
        return 2;
    }
    bms_model *model = NULL;
    if (bms_model_load(argv[1], &model) != BMS_STATUS_OK) {
        fprintf(stderr, "%s\n", bms_last_error_message());
        return 1;
    }
    float threshold = 0.5f;
    const char *id = "";
    bms_model_threshold(model, &threshold);
    bms_model_id(model, &id);
    bms_monitor_config config = bms_monitor_config_default();
    if (argc == 4) {
        config.utc_offset_seconds = atoi(argv[3]);
    }
    frames_csv r;
    if (frames_csv_open(&r, argv[2]) != 0) {
        bms_model_free(model);
        return 1;
    }
    fprintf(stderr, "libbms %s, model %s (threshold %.3f), %zu cells, %zu probes\n", bms_version(), id,
            threshold, r.n_cells, r.n_temps);
    printf("vin,date,frames,alarm_day,predicted_prob,predicted_alarm\n");

    bms_monitor *m = NULL;
    char vin[64] = "";
    int64_t last_ts = 0;
    uint64_t closed_before = 0;
    int rc = 0, got;
    while ((got = frames_csv_next(&r)) == 1) {
        if (m == NULL || strcmp(vin, r.vin) != 0) {
            if (m) { /* the previous vehicle ends: close its last day */
                bms_monitor_advance_to(m, next_midnight(last_ts, config.utc_offset_seconds));
                report(m, vin, &closed_before, threshold);
                bms_monitor_free(m);
            }
            if (bms_monitor_new(model, &config, &m) != BMS_STATUS_OK) {
                fprintf(stderr, "%s\n", bms_last_error_message());
                rc = 1;
                break;
            }
            strcpy(vin, r.vin);
            closed_before = 0;
        }
        bms_status s = bms_monitor_push_frame(m, r.timestamp_ms, r.pack_v, r.pack_i, r.soc, r.cells, r.n_cells,
                                              r.temps, r.n_temps, r.alarm_flags);
        if (s != BMS_STATUS_OK) {
            /* Out-of-order or duplicate frames are skipped; the monitor is unchanged. */
            fprintf(stderr, "%s, line %lu: skipped (status %u): %s\n", argv[2], r.line_no, (unsigned)s,
                    bms_last_error_message());
            continue;
        }
        last_ts = r.timestamp_ms;
        if (report(m, vin, &closed_before, threshold) != 0) {
            rc = 1;
            break;
        }
    }
    if (got < 0) {
        rc = 1;
    }
    if (m && rc == 0) {
        bms_monitor_advance_to(m, next_midnight(last_ts, config.utc_offset_seconds));
        report(m, vin, &closed_before, threshold);
    }
    bms_monitor_free(m);
    bms_model_free(model);
    frames_csv_close(&r);
    return rc;
}
