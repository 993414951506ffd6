/*
 * Error paths of libbms from C: NULL handles and buffers, wrong lengths, bad model bytes,
 * out-of-order and duplicate frames, _free(NULL). Each failing call must return its
 * documented status, set a message, and leave out-parameters and state untouched.
 * Run under valgrind by scripts/test-c.sh: no invalid access, no leak.
 *
 * usage: errors MODEL.onnx
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bms.h>

static int failures = 0;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                             \
        }                                                                           \
    } while (0)

/* A status and a non-empty message. */
#define EXPECT(call, status)                                                                   \
    do {                                                                                       \
        bms_status got_ = (call);                                                              \
        if (got_ != (status)) {                                                                \
            fprintf(stderr, "%s:%d: %s returned %u, expected %u (%s)\n", __FILE__, __LINE__, #call, \
                    (unsigned)got_, (unsigned)(status), bms_last_error_message());             \
            failures++;                                                                        \
        } else if ((status) != BMS_STATUS_OK && bms_last_error_message()[0] == '\0') {         \
            fprintf(stderr, "%s:%d: %s: no error message\n", __FILE__, __LINE__, #call);     \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static bms_status push(bms_monitor *m, int64_t ts, double v) {
    double cells[96], temps[4] = {25.0, 26.0, 25.5, 24.0};
    for (int i = 0; i < 96; i++) {
        cells[i] = v + 0.001 * (i % 5);
    }
    return bms_monitor_push_frame(m, ts, 96 * v, 20.0, 55.0, cells, 96, temps, 4, 0);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.onnx\n", argv[0]);
        return 2;
    }
    const char *version = bms_version();
    CHECK(version != NULL && strlen(version) > 0);
    CHECK(bms_last_error_message() != NULL);

    /* _free(NULL) is a no-op. */
    bms_model_free(NULL);
    bms_monitor_free(NULL);

    /* Bad model bytes, NULLs, missing file. */
    bms_model *model = NULL;
    const unsigned char junk[] = "definitely not an ONNX protobuf";
    EXPECT(bms_model_load_bytes(junk, sizeof junk, &model), BMS_STATUS_MODEL);
    CHECK(strstr(bms_last_error_message(), "not an ONNX model") != NULL);
    CHECK(model == NULL);
    EXPECT(bms_model_load_bytes(junk, 0, &model), BMS_STATUS_MODEL);
    EXPECT(bms_model_load_bytes(NULL, 10, &model), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_model_load_bytes(junk, sizeof junk, NULL), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_model_load(NULL, &model), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_model_load("/nonexistent/model.onnx", &model), BMS_STATUS_IO);
    EXPECT(bms_model_load("\xff\xfe.onnx", &model), BMS_STATUS_INVALID_ARGUMENT);
    CHECK(model == NULL);

    /* From memory: the whole file works, a truncated copy does not. */
    size_t len = 0;
    unsigned char *bytes = read_file(argv[1], &len);
    CHECK(bytes != NULL);
    if (!bytes) {
        return 1;
    }
    EXPECT(bms_model_load_bytes(bytes, len / 2, &model), BMS_STATUS_MODEL);
    CHECK(model == NULL);
    EXPECT(bms_model_load_bytes(bytes, len, &model), BMS_STATUS_OK);
    free(bytes);
    if (!model) {
        return 1;
    }
    bms_model *from_file = NULL;
    EXPECT(bms_model_load(argv[1], &from_file), BMS_STATUS_OK);

    /* Getters. */
    size_t context = 0, horizon = 0, width = 0;
    float threshold = -1.0f;
    const char *id = NULL;
    EXPECT(bms_model_context(model, &context), BMS_STATUS_OK);
    EXPECT(bms_model_horizon(model, &horizon), BMS_STATUS_OK);
    EXPECT(bms_model_width(model, &width), BMS_STATUS_OK);
    EXPECT(bms_model_threshold(model, &threshold), BMS_STATUS_OK);
    EXPECT(bms_model_id(model, &id), BMS_STATUS_OK);
    CHECK(context == 14 && horizon == 14 && width == 84);
    CHECK(threshold > 0.0f && threshold < 1.0f);
    CHECK(id != NULL && strlen(id) > 0);
    size_t untouched = 12345;
    EXPECT(bms_model_width(NULL, &untouched), BMS_STATUS_NULL_POINTER);
    CHECK(untouched == 12345);
    EXPECT(bms_model_width(model, NULL), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_model_id(NULL, &id), BMS_STATUS_NULL_POINTER);

    /* Batch predict: right and wrong lengths; both models agree. */
    float x[3 * 84];
    for (int i = 0; i < 3 * 84; i++) {
        x[i] = (i % 6 < 4) ? 3.6f + 0.01f * (float)(i % 9) : 25.0f;
    }
    x[5] = NAN;
    float p[4] = {-1, -1, -1, -1}, q[3] = {-2, -2, -2};
    EXPECT(bms_model_predict(model, x, 3 * 84, 3, p, 4), BMS_STATUS_OK);
    EXPECT(bms_model_predict(from_file, x, 3 * 84, 3, q, 3), BMS_STATUS_OK);
    for (int i = 0; i < 3; i++) {
        CHECK(p[i] >= 0.0f && p[i] <= 1.0f && p[i] == q[i]);
    }
    CHECK(p[3] == -1.0f);
    float keep[3] = {7, 7, 7};
    EXPECT(bms_model_predict(model, x, 3 * 84 - 1, 3, keep, 3), BMS_STATUS_LENGTH_MISMATCH);
    EXPECT(bms_model_predict(model, x, 3 * 84, 3, keep, 2), BMS_STATUS_LENGTH_MISMATCH);
    EXPECT(bms_model_predict(model, x, 3 * 84, (size_t)-1, keep, 3), BMS_STATUS_LENGTH_MISMATCH);
    EXPECT(bms_model_predict(model, NULL, 3 * 84, 3, keep, 3), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_model_predict(model, x, 3 * 84, 3, NULL, 3), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_model_predict(NULL, x, 3 * 84, 3, keep, 3), BMS_STATUS_NULL_POINTER);
    CHECK(keep[0] == 7 && keep[1] == 7 && keep[2] == 7);
    EXPECT(bms_model_predict(model, NULL, 0, 0, NULL, 0), BMS_STATUS_OK);

    /* Frame features. */
    double cells[4] = {3.70, 3.72, NAN, 3.60}, temps[2] = {20.0, 23.0};
    bms_frame_features f;
    memset(&f, 0, sizeof f);
    EXPECT(bms_frame_compute_features(BMS_CHEMISTRY_NMC, 0.10, 50.0, cells, 4, temps, 2, BMS_NO_ALARM_FLAGS, &f),
           BMS_STATUS_OK);
    CHECK(fabs(f.cell_v_spread - 0.12) < 1e-12 && f.cell_v_max_idx == 1 && f.cell_v_min_idx == 3);
    CHECK(f.consistency_alarm); /* 0.12 V > 0.10 V */
    CHECK(f.temp_delta == 3.0);
    EXPECT(bms_frame_compute_features(BMS_CHEMISTRY_NMC, 0.10, 50.0, cells, 4, temps, 2, 0, &f), BMS_STATUS_OK);
    CHECK(!f.consistency_alarm); /* flags present, bit 10 clear */
    bms_frame_features g = f;
    EXPECT(bms_frame_compute_features(BMS_CHEMISTRY_NMC, 0.10, 50.0, cells, 0, temps, 2, 0, &g),
           BMS_STATUS_INVALID_ARGUMENT);
    EXPECT(bms_frame_compute_features(BMS_CHEMISTRY_NMC, 0.10, 50.0, NULL, 4, temps, 2, 0, &g),
           BMS_STATUS_NULL_POINTER);
    EXPECT(bms_frame_compute_features(9, 0.10, 50.0, cells, 4, temps, 2, 0, &g), BMS_STATUS_INVALID_ARGUMENT);
    EXPECT(bms_frame_compute_features(BMS_CHEMISTRY_LFP, -1.0, 50.0, cells, 4, temps, 2, 0, &g),
           BMS_STATUS_INVALID_ARGUMENT);
    EXPECT(bms_frame_compute_features(BMS_CHEMISTRY_NMC, 0.10, 50.0, cells, 4, temps, 2, -5, &g),
           BMS_STATUS_INVALID_ARGUMENT);
    EXPECT(bms_frame_compute_features(BMS_CHEMISTRY_NMC, 0.10, 50.0, cells, 4, temps, 2, 0, NULL),
           BMS_STATUS_NULL_POINTER);
    /* Untouched by the failures (fields compared: the struct has padding). */
    CHECK(g.cell_v_spread == f.cell_v_spread && g.cell_v_max_idx == f.cell_v_max_idx && g.temp_delta == f.temp_delta &&
          g.consistency_alarm == f.consistency_alarm);

    /* Monitor: configuration errors. */
    bms_monitor *m = NULL;
    bms_monitor_config config = bms_monitor_config_default();
    config.chemistry = 42;
    EXPECT(bms_monitor_new(model, &config, &m), BMS_STATUS_INVALID_ARGUMENT);
    config = bms_monitor_config_default();
    config.utc_offset_seconds = 86400;
    EXPECT(bms_monitor_new(model, &config, &m), BMS_STATUS_INVALID_ARGUMENT);
    EXPECT(bms_monitor_new(NULL, NULL, &m), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_monitor_new(model, NULL, NULL), BMS_STATUS_NULL_POINTER);
    CHECK(m == NULL);
    config = bms_monitor_config_default();
    config.utc_offset_seconds = 8 * 3600;
    EXPECT(bms_monitor_new(model, &config, &m), BMS_STATUS_OK);
    if (!m) {
        return 1;
    }

    float prob = 0.25f;
    int64_t day = -7;
    bms_daily_row row;
    EXPECT(bms_monitor_predict(m, &prob), BMS_STATUS_NOT_READY);
    EXPECT(bms_monitor_current_day(m, &day), BMS_STATUS_NOT_READY);
    EXPECT(bms_monitor_day(m, 0, &row), BMS_STATUS_OUT_OF_RANGE);
    CHECK(prob == 0.25f && day == -7);

    /* 20 days, two frames a day (Beijing days: 02:00 and 14:00 local). */
    const int64_t DAY = 86400000, t0 = 1704067200000LL - 8 * 3600000LL; /* 2024-01-01 00:00 +08:00 */
    for (int d = 0; d < 20; d++) {
        EXPECT(push(m, t0 + d * DAY + 2 * 3600000, 3.7), BMS_STATUS_OK);
        EXPECT(push(m, t0 + d * DAY + 14 * 3600000, 3.8), BMS_STATUS_OK);
    }
    uint64_t closed = 0;
    size_t held = 0;
    EXPECT(bms_monitor_days_closed(m, &closed), BMS_STATUS_OK);
    EXPECT(bms_monitor_days(m, &held), BMS_STATUS_OK);
    CHECK(closed == 19 && held == 14);
    EXPECT(bms_monitor_day(m, 0, &row), BMS_STATUS_OK);
    CHECK(row.frames == 2.0 && row.label == 0.0 && row.day == 19723 + 18);
    CHECK(fabs(row.total_voltage - 96 * 3.75) < 1e-9);
    EXPECT(bms_monitor_predict(m, &prob), BMS_STATUS_OK);
    CHECK(prob >= 0.0f && prob <= 1.0f);

    /* Out of order and duplicate: rejected, nothing changes. */
    const int64_t last = t0 + 19 * DAY + 14 * 3600000;
    float again = -1.0f;
    EXPECT(push(m, last - 1, 4.1), BMS_STATUS_OUT_OF_ORDER);
    EXPECT(push(m, t0, 4.1), BMS_STATUS_OUT_OF_ORDER);
    EXPECT(push(m, last, 4.1), BMS_STATUS_DUPLICATE_TIMESTAMP);
    EXPECT(bms_monitor_advance_to(m, last - DAY), BMS_STATUS_OUT_OF_ORDER);
    bms_daily_row after;
    uint64_t closed_after = 0;
    EXPECT(bms_monitor_days_closed(m, &closed_after), BMS_STATUS_OK);
    EXPECT(bms_monitor_day(m, 0, &after), BMS_STATUS_OK);
    EXPECT(bms_monitor_predict(m, &again), BMS_STATUS_OK);
    CHECK(closed_after == closed && memcmp(&after, &row, sizeof row) == 0 && again == prob);

    /* Wrong lengths and NULLs on push. */
    double c96[96] = {0}, t1[1] = {20.0};
    EXPECT(bms_monitor_push_frame(m, last + 1, 1, 1, 1, c96, 0, t1, 1, 0), BMS_STATUS_INVALID_ARGUMENT);
    EXPECT(bms_monitor_push_frame(m, last + 1, 1, 1, 1, c96, 96, t1, 0, 0), BMS_STATUS_INVALID_ARGUMENT);
    EXPECT(bms_monitor_push_frame(m, last + 1, 1, 1, 1, NULL, 96, t1, 1, 0), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_monitor_push_frame(m, last + 1, 1, 1, 1, c96, 96, NULL, 1, 0), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_monitor_push_frame(NULL, last + 1, 1, 1, 1, c96, 96, t1, 1, 0), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_monitor_push_frame(m, last + 1, 1, 1, 1, c96, 96, t1, 1, 1LL << 33), BMS_STATUS_INVALID_ARGUMENT);
    EXPECT(bms_monitor_push_frame(m, INT64_MAX, 1, 1, 1, c96, 96, t1, 1, 0), BMS_STATUS_INVALID_ARGUMENT);
    EXPECT(bms_monitor_predict(m, NULL), BMS_STATUS_NULL_POINTER);
    EXPECT(bms_monitor_day(m, 14, &after), BMS_STATUS_OUT_OF_RANGE);
    EXPECT(bms_monitor_days_closed(m, &closed_after), BMS_STATUS_OK);
    CHECK(closed_after == closed);

    /* An alarm frame (bit 10) makes the next closed day an alarm day. */
    double spread[96];
    for (int i = 0; i < 96; i++) {
        spread[i] = 3.7;
    }
    spread[7] = 3.5;
    EXPECT(bms_monitor_push_frame(m, last + 1000, 355.0, 10.0, 50.0, spread, 96, t1, 1, BMS_CONSISTENCY_ALARM_MASK),
           BMS_STATUS_OK);
    EXPECT(bms_monitor_advance_to(m, t0 + 20 * DAY), BMS_STATUS_OK);
    EXPECT(bms_monitor_day(m, 0, &after), BMS_STATUS_OK);
    CHECK(after.label == 1.0 && after.frames == 3.0 && fabs(after.spread_max - 0.2) < 1e-12);

    /* The monitor keeps the model alive after bms_model_free. */
    bms_model_free(model);
    bms_model_free(from_file);
    EXPECT(bms_monitor_predict(m, &prob), BMS_STATUS_OK);
    bms_monitor_free(m);

    /* Issue 20 (SPEC §7), run from the repository root: a model that does not handle
     * missing values gives NaN for a row with one (as onnxruntime does), not a number its
     * kernels made of it; a regressor cannot drive a monitor. */
    struct bms_model *logreg = NULL, *reg = NULL;
    EXPECT(bms_model_load("models/fixtures/logreg_n.onnx", &logreg), BMS_STATUS_OK);
    float lp[3] = {0, 0, 0};
    EXPECT(bms_model_predict(logreg, x, 3 * 84, 3, lp, 3), BMS_STATUS_OK);
    CHECK(isnan(lp[0]) && !isnan(lp[1]) && !isnan(lp[2]));
    EXPECT(bms_model_load("models/fixtures/xgb_regressor.onnx", &reg), BMS_STATUS_OK);
    struct bms_monitor *rm = NULL;
    EXPECT(bms_monitor_new(reg, NULL, &rm), BMS_STATUS_MODEL);
    CHECK(rm == NULL && strstr(bms_last_error_message(), "not a probability") != NULL);
    bms_model_free(logreg);
    bms_model_free(reg);

    if (failures) {
        fprintf(stderr, "errors: %d check(s) failed\n", failures);
        return 1;
    }
    printf("errors: all checks passed\n");
    return 0;
}
