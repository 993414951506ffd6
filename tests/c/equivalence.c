/*
 * Streams a frame CSV from `bms simulate --frames` through one bms_monitor per vehicle
 * and checks, exactly (bit for bit after parsing the shortest round-trip text), that
 *  - every closed day equals the row `bms daily` wrote for it (all 12 numeric fields),
 *  - each time a day opens, bms_monitor_predict equals the probability `bms windows` +
 *    `bms predict` wrote for the window dated that day,
 * and that every daily row and every window dated on a day with frames was compared.
 *
 * usage: equivalence MODEL.onnx FRAMES.csv DAILY.csv PREDICTIONS.csv
 */
#include "../../examples/c/frames_csv.h"

#include <bms.h>

typedef struct {
    char vin[64];
    char date[11];
    double v[12]; /* the daily CSV's numeric fields in file order */
    int seen;
} daily_rec;

typedef struct {
    char vin[64];
    char date[11];
    float prob;
    int seen;
} pred_rec;

static daily_rec *daily;
static size_t n_daily;
static pred_rec *preds;
static size_t n_preds;
static int failures;

static int load_daily(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, alloc = 0;
    if (getline(&line, &cap, f) < 0 ||
        strncmp(line, "VIN,Date,TotalVoltage,TotalCurrent,CellMaxVoltage,CellMinVoltage,MaxTemperature,"
                      "MinTemperature,Label,spread_mean,spread_max,temp_delta_max,soc_deviation_mean,frames",
                124) != 0) {
        fprintf(stderr, "%s: not an extended daily CSV\n", path);
        return -1;
    }
    while (getline(&line, &cap, f) > 0) {
        if (n_daily == alloc) {
            alloc = alloc ? 2 * alloc : 256;
            daily = realloc(daily, alloc * sizeof *daily);
        }
        daily_rec *r = &daily[n_daily++];
        memset(r, 0, sizeof *r);
        char *p = line;
        snprintf(r->vin, sizeof r->vin, "%s", frames_csv_field(&p));
        snprintf(r->date, sizeof r->date, "%s", frames_csv_field(&p));
        for (int i = 0; i < 12; i++) {
            char *s = frames_csv_field(&p);
            r->v[i] = s ? strtod(s, NULL) : NAN;
        }
    }
    free(line);
    fclose(f);
    return 0;
}

static int load_preds(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, alloc = 0;
    if (getline(&line, &cap, f) < 0 || strncmp(line, "vin,date,predicted_prob,alarm", 29) != 0) {
        fprintf(stderr, "%s: not a predictions CSV\n", path);
        return -1;
    }
    while (getline(&line, &cap, f) > 0) {
        if (n_preds == alloc) {
            alloc = alloc ? 2 * alloc : 256;
            preds = realloc(preds, alloc * sizeof *preds);
        }
        pred_rec *r = &preds[n_preds++];
        memset(r, 0, sizeof *r);
        char *p = line;
        snprintf(r->vin, sizeof r->vin, "%s", frames_csv_field(&p));
        snprintf(r->date, sizeof r->date, "%s", frames_csv_field(&p));
        r->prob = strtof(frames_csv_field(&p), NULL);
    }
    free(line);
    fclose(f);
    return 0;
}

static int same(double a, double b) { return a == b || (isnan(a) && isnan(b)); }

static void compare_day(const char *vin, const bms_daily_row *row) {
    char date[11];
    day_to_date(row->day, date);
    for (size_t i = 0; i < n_daily; i++) {
        daily_rec *d = &daily[i];
        if (strcmp(d->vin, vin) != 0 || strcmp(d->date, date) != 0) {
            continue;
        }
        /* File order: 6 reference columns, Label, then the 5 extended columns. */
        double ours[12] = {row->total_voltage, row->total_current, row->cell_max_voltage, row->cell_min_voltage,
                           row->max_temperature, row->min_temperature, row->label, row->spread_mean,
                           row->spread_max, row->temp_delta_max, row->soc_deviation_mean, row->frames};
        for (int k = 0; k < 12; k++) {
            if (!same(ours[k], d->v[k])) {
                fprintf(stderr, "%s %s field %d: monitor %.17g, bms daily %.17g\n", vin, date, k, ours[k], d->v[k]);
                failures++;
            }
        }
        d->seen++;
        return;
    }
    fprintf(stderr, "%s %s: closed by the monitor but not in the daily table\n", vin, date);
    failures++;
}

static pred_rec *find_pred(const char *vin, const char *date) {
    for (size_t i = 0; i < n_preds; i++) {
        if (strcmp(preds[i].vin, vin) == 0 && strcmp(preds[i].date, date) == 0) {
            return &preds[i];
        }
    }
    return NULL;
}

/* Compares the days a call closed and, if a day opened, the window's probability. */
static void check(bms_monitor *m, const char *vin, uint64_t *closed_before, size_t context) {
    uint64_t closed = 0;
    size_t held = 0;
    bms_monitor_days_closed(m, &closed);
    bms_monitor_days(m, &held);
    uint64_t fresh = closed - *closed_before;
    *closed_before = closed;
    if (fresh == 0) {
        return;
    }
    if (fresh > held) {
        fprintf(stderr, "%s: %llu days closed at once, more than the ring holds\n", vin, (unsigned long long)fresh);
        failures++;
    }
    for (size_t age = 0; age < fresh && age < held; age++) {
        bms_daily_row row;
        bms_monitor_day(m, age, &row);
        compare_day(vin, &row);
    }
    int64_t day = 0;
    char date[11];
    if (bms_monitor_current_day(m, &day) != BMS_STATUS_OK) {
        failures++;
        return;
    }
    day_to_date(day, date);
    float p = -1.0f;
    bms_status s = bms_monitor_predict(m, &p);
    pred_rec *want = find_pred(vin, date);
    if (closed < context) {
        if (s != BMS_STATUS_NOT_READY || want) {
            fprintf(stderr, "%s %s: status %u with %llu days\n", vin, date, (unsigned)s, (unsigned long long)closed);
            failures++;
        }
        return;
    }
    if (s != BMS_STATUS_OK) {
        fprintf(stderr, "%s %s: %s\n", vin, date, bms_last_error_message());
        failures++;
        return;
    }
    if (!want) {
        return; /* the day after the last one (closed by advance_to): no batch window */
    }
    if (p != want->prob) {
        fprintf(stderr, "%s %s: monitor %.9g, bms predict %.9g\n", vin, date, p, want->prob);
        failures++;
    }
    want->seen++;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.onnx FRAMES.csv DAILY.csv PREDICTIONS.csv\n", argv[0]);
        return 2;
    }
    bms_model *model = NULL;
    if (bms_model_load(argv[1], &model) != BMS_STATUS_OK) {
        fprintf(stderr, "%s\n", bms_last_error_message());
        return 1;
    }
    size_t context = 0;
    bms_model_context(model, &context);
    frames_csv r;
    if (load_daily(argv[3]) || load_preds(argv[4]) || frames_csv_open(&r, argv[2])) {
        return 1;
    }
    bms_monitor *m = NULL;
    char vin[64] = "";
    int64_t last_ts = 0;
    uint64_t closed = 0, frames = 0;
    int got;
    while ((got = frames_csv_next(&r)) == 1) {
        if (!m || strcmp(vin, r.vin) != 0) {
            if (m) {
                bms_monitor_advance_to(m, (last_ts / 86400000 + 1) * 86400000);
                check(m, vin, &closed, context);
                bms_monitor_free(m);
            }
            if (bms_monitor_new(model, NULL, &m) != BMS_STATUS_OK) {
                return 1;
            }
            snprintf(vin, sizeof vin, "%s", r.vin);
            closed = 0;
        }
        bms_status s = bms_monitor_push_frame(m, r.timestamp_ms, r.pack_v, r.pack_i, r.soc, r.cells, r.n_cells, r.temps,
                                              r.n_temps, r.alarm_flags);
        if (s != BMS_STATUS_OK) {
            fprintf(stderr, "line %lu: %s\n", r.line_no, bms_last_error_message());
            failures++;
            continue;
        }
        frames++;
        last_ts = r.timestamp_ms;
        check(m, vin, &closed, context);
    }
    if (m) {
        bms_monitor_advance_to(m, (last_ts / 86400000 + 1) * 86400000);
        check(m, vin, &closed, context);
        bms_monitor_free(m);
    }
    bms_model_free(model);
    frames_csv_close(&r);
    if (got < 0) {
        failures++;
    }

    /* Coverage: every daily row once; every window dated on a day with frames once. */
    size_t rows_seen = 0, windows_expected = 0, windows_seen = 0, alarm_days = 0;
    for (size_t i = 0; i < n_daily; i++) {
        rows_seen += daily[i].seen == 1;
        alarm_days += daily[i].v[6] == 1.0;
        if (daily[i].seen != 1) {
            fprintf(stderr, "%s %s: compared %d times\n", daily[i].vin, daily[i].date, daily[i].seen);
            failures++;
        }
    }
    for (size_t i = 0; i < n_preds; i++) {
        int with_frames = 0;
        for (size_t j = 0; j < n_daily; j++) {
            if (strcmp(daily[j].vin, preds[i].vin) == 0 && strcmp(daily[j].date, preds[i].date) == 0) {
                with_frames = daily[j].v[11] > 0;
            }
        }
        windows_expected += with_frames;
        windows_seen += preds[i].seen;
        if (preds[i].seen != with_frames) {
            fprintf(stderr, "%s %s: window compared %d times\n", preds[i].vin, preds[i].date, preds[i].seen);
            failures++;
        }
    }
    free(daily);
    free(preds);
    printf("equivalence: %llu frames, %zu/%zu daily rows (%zu alarm days), %zu/%zu windows equal\n",
           (unsigned long long)frames, rows_seen, n_daily, alarm_days, windows_seen, windows_expected);
    if (n_daily == 0 || windows_expected == 0) {
        fprintf(stderr, "equivalence: nothing compared\n");
        failures++;
    }
    if (failures) {
        fprintf(stderr, "equivalence: %d failure(s)\n", failures);
        return 1;
    }
    return 0;
}
