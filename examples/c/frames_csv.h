/*
 * A small reader of the frame CSV that `bms simulate --frames` writes (SPEC §2):
 *   vin,timestamp,pack_voltage,pack_current,soc,cell_v_1..cell_v_N,temp_1..temp_M[,alarm_flags]
 * with `timestamp` in integer milliseconds. Header-only, C99, no dependencies; shared by
 * examples/c/monitor.c and the C tests. Also: day numbers to YYYY-MM-DD.
 */
#ifndef BMS_FRAMES_CSV_H
#define BMS_FRAMES_CSV_H

#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct frames_csv {
    FILE *file;
    const char *path;
    char *line;
    size_t line_cap;
    unsigned long line_no;
    size_t n_cells, n_temps;
    int has_flags;
    /* The current frame. */
    char vin[64];
    int64_t timestamp_ms;
    double pack_v, pack_i, soc;
    double *cells, *temps;
    int64_t alarm_flags; /* -1 (BMS_NO_ALARM_FLAGS) when the field is empty or absent */
} frames_csv;

static int frames_csv_fail(frames_csv *r, const char *what) {
    fprintf(stderr, "%s, line %lu: %s\n", r->path, r->line_no, what);
    return -1;
}

/* Opens `path` and reads its header. Returns 0, or -1 after printing why. */
static int frames_csv_open(frames_csv *r, const char *path) {
    memset(r, 0, sizeof *r);
    r->path = path;
    r->file = fopen(path, "r");
    if (!r->file) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    if (getline(&r->line, &r->line_cap, r->file) < 0) {
        return frames_csv_fail(r, "empty file (expected a frame CSV header)");
    }
    r->line_no = 1;
    if (strncmp(r->line, "vin,timestamp,pack_voltage,pack_current,soc,", 44) != 0) {
        return frames_csv_fail(r, "header does not start with vin,timestamp,pack_voltage,pack_current,soc");
    }
    for (char *tok = strtok(r->line + 44, ",\r\n"); tok; tok = strtok(NULL, ",\r\n")) {
        if (strncmp(tok, "cell_v_", 7) == 0) {
            r->n_cells++;
        } else if (strncmp(tok, "temp_", 5) == 0) {
            r->n_temps++;
        } else if (strcmp(tok, "alarm_flags") == 0) {
            r->has_flags = 1;
        } else {
            return frames_csv_fail(r, "unexpected column in the header");
        }
    }
    if (r->n_cells == 0 || r->n_temps == 0) {
        return frames_csv_fail(r, "the header has no cell_v_* or no temp_* column");
    }
    r->cells = malloc(r->n_cells * sizeof(double));
    r->temps = malloc(r->n_temps * sizeof(double));
    if (!r->cells || !r->temps) {
        return frames_csv_fail(r, "out of memory");
    }
    return 0;
}

/* Splits off the next comma-separated field of *p (NULL when there is none). */
static char *frames_csv_field(char **p) {
    char *s = *p;
    if (!s) {
        return NULL;
    }
    char *end = strpbrk(s, ",\r\n");
    if (end && *end == ',') {
        *end = '\0';
        *p = end + 1;
    } else {
        if (end) {
            *end = '\0';
        }
        *p = NULL;
    }
    return s;
}

static int frames_csv_number(frames_csv *r, const char *s, double *out) {
    if (!s) {
        return frames_csv_fail(r, "too few fields");
    }
    if (*s == '\0') {
        *out = NAN;
        return 0;
    }
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    if (*end != '\0') {
        char msg[128];
        snprintf(msg, sizeof msg, "'%.60s' is not a number", s);
        return frames_csv_fail(r, msg);
    }
    return 0;
}

/* Reads the next frame. Returns 1 for a frame, 0 at the end, -1 after printing an error. */
static int frames_csv_next(frames_csv *r) {
    ssize_t n = getline(&r->line, &r->line_cap, r->file);
    if (n < 0) {
        return 0;
    }
    r->line_no++;
    char *p = r->line;
    char *vin = frames_csv_field(&p);
    if (!vin || *vin == '\0' || strlen(vin) >= sizeof r->vin) {
        return frames_csv_fail(r, "missing or overlong VIN");
    }
    strcpy(r->vin, vin);
    char *ts = frames_csv_field(&p);
    char *end;
    if (!ts || *ts == '\0') {
        return frames_csv_fail(r, "missing timestamp");
    }
    r->timestamp_ms = strtoll(ts, &end, 10);
    if (*end != '\0') {
        return frames_csv_fail(r, "timestamp is not integer milliseconds");
    }
    if (frames_csv_number(r, frames_csv_field(&p), &r->pack_v) ||
        frames_csv_number(r, frames_csv_field(&p), &r->pack_i) ||
        frames_csv_number(r, frames_csv_field(&p), &r->soc)) {
        return -1;
    }
    for (size_t i = 0; i < r->n_cells; i++) {
        if (frames_csv_number(r, frames_csv_field(&p), &r->cells[i])) {
            return -1;
        }
    }
    for (size_t i = 0; i < r->n_temps; i++) {
        if (frames_csv_number(r, frames_csv_field(&p), &r->temps[i])) {
            return -1;
        }
    }
    r->alarm_flags = -1;
    if (r->has_flags) {
        char *f = frames_csv_field(&p);
        if (!f) {
            return frames_csv_fail(r, "too few fields (alarm_flags missing)");
        }
        if (*f != '\0') {
            int hex = f[0] == '0' && (f[1] == 'x' || f[1] == 'X');
            unsigned long long v = strtoull(hex ? f + 2 : f, &end, hex ? 16 : 10);
            if (*end != '\0' || v > 0xffffffffULL) {
                return frames_csv_fail(r, "alarm_flags is not a 32-bit number");
            }
            r->alarm_flags = (int64_t)v;
        }
    }
    if (p) {
        return frames_csv_fail(r, "too many fields");
    }
    return 1;
}

static void frames_csv_close(frames_csv *r) {
    if (r->file) {
        fclose(r->file);
    }
    free(r->line);
    free(r->cells);
    free(r->temps);
    memset(r, 0, sizeof *r);
}

/* Writes day `day` (days since 1970-01-01) as YYYY-MM-DD into out[11]
 * (H. Hinnant's civil_from_days). */
static void day_to_date(int64_t day, char out[11]) {
    int64_t z = day + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    snprintf(out, 11, "%04d-%02d-%02d", (int)y, (int)m, (int)d);
}

#endif /* BMS_FRAMES_CSV_H */
