/*
 * Benchmark of libbms through its C ABI, as a vehicle's telematics unit calls it:
 *  - bms_monitor_push_frame per 96-cell, 32-probe frame (frames 10 s apart, so days close
 *    as they would on the road), against a yardstick measured in the same run: the
 *    plain loop summing the frame's 128 readings;
 *  - bms_monitor_predict latency (one 14-day window through the shipped model);
 *  - the heap the model and the monitor hold (glibc's mallinfo2: bytes in use before and
 *    after each is created; libbms allocates through malloc).
 * Run by scripts/bench-c.sh (release build); figures go to benches/RESULTS.md.
 *
 * usage: monitor_bench MODEL.onnx [frames]
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <bms.h>

#define CELLS 96
#define PROBES 32
#define VARIANTS 64

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static size_t heap_in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.onnx [frames]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? atol(argv[2]) : 2000000;
    bms_model *model = NULL;
    bms_monitor *m = NULL;
    size_t heap0 = heap_in_use();
    if (bms_model_load(argv[1], &model) != BMS_STATUS_OK) {
        fprintf(stderr, "%s\n", bms_last_error_message());
        return 1;
    }
    size_t heap1 = heap_in_use();
    if (bms_monitor_new(model, NULL, &m) != BMS_STATUS_OK) {
        fprintf(stderr, "%s\n", bms_last_error_message());
        return 1;
    }
    size_t heap2 = heap_in_use();
    /* Realistic readings: cells around 3.6-3.9 V at 1 mV resolution, probes in whole °C. */
    static double cells[VARIANTS][CELLS], temps[VARIANTS][PROBES];
    unsigned seed = 12345;
    for (int v = 0; v < VARIANTS; v++) {
        double base = 3.6 + 0.3 * v / VARIANTS;
        for (int i = 0; i < CELLS; i++) {
            seed = seed * 1103515245u + 12345u;
            cells[v][i] = round((base + 0.001 * (double)((seed >> 16) % 25)) * 1000.0) / 1000.0;
        }
        for (int i = 0; i < PROBES; i++) {
            temps[v][i] = 20.0 + (double)(i % 5);
        }
    }
    const int64_t t0 = 1704067200000LL;

    /* Yardstick: sum every reading of every frame once. */
    volatile double sink = 0.0;
    double s0 = now();
    for (long k = 0; k < n; k++) {
        const double *c = cells[k % VARIANTS], *t = temps[k % VARIANTS];
        double s = 0.0;
        for (int i = 0; i < CELLS; i++) s += c[i];
        for (int i = 0; i < PROBES; i++) s += t[i];
        sink += s;
    }
    double yard = now() - s0;

    double p0 = now();
    for (long k = 0; k < n; k++) {
        int v = (int)(k % VARIANTS);
        if (bms_monitor_push_frame(m, t0 + k * 10000, 360.0, 30.0, 60.0, cells[v], CELLS, temps[v], PROBES, 0) !=
            BMS_STATUS_OK) {
            fprintf(stderr, "push: %s\n", bms_last_error_message());
            return 1;
        }
    }
    double push = now() - p0;
    uint64_t closed = 0;
    bms_monitor_days_closed(m, &closed);

    enum { CALLS = 20000 };
    static double lat[CALLS];
    float prob = 0.0f;
    for (int i = 0; i < 100; i++) bms_monitor_predict(m, &prob); /* warm-up */
    for (int i = 0; i < CALLS; i++) {
        double a = now();
        if (bms_monitor_predict(m, &prob) != BMS_STATUS_OK) {
            fprintf(stderr, "predict: %s\n", bms_last_error_message());
            return 1;
        }
        lat[i] = now() - a;
    }
    qsort(lat, CALLS, sizeof lat[0], cmp_double);

    printf("push_frame (96 cells, 32 probes): %ld frames (%llu days closed) in %.3f s: %.1f ns/frame, %.2f M frames/s\n",
           n, (unsigned long long)closed, push, 1e9 * push / (double)n, (double)n / push / 1e6);
    printf("yardstick (sum of the 128 readings): %.1f ns/frame; push_frame = %.1f x yardstick\n", 1e9 * yard / (double)n,
           push / yard);
    printf("predict (14-day window, shipped ref model): median %.2f us, p99 %.2f us over %d calls (p = %.4f)\n",
           1e6 * lat[CALLS / 2], 1e6 * lat[CALLS * 99 / 100], CALLS, prob);
    printf("heap: model %zu bytes, monitor %zu bytes (in use after push_frame/predict: %zu bytes)\n",
           heap1 - heap0, heap2 - heap1, heap_in_use() - heap0);
    bms_monitor_free(m);
    bms_model_free(model);
    return sink == 0.5 ? 3 : 0;
}
