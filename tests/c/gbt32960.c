/*
 * The GB/T 32960 decoder of libbms from C: the worked examples of docs/GBT32960.md §8
 * (2016 and 2025 editions) pushed one byte at a time around a packet with a wrong
 * checksum and a heartbeat; the frames must carry the example's values, the bad packet
 * must be BMS_STATUS_BAD_PACKET with its offset in the message, the counts must add up,
 * and a decoded frame must feed bms_monitor_push_frame as is.
 * Run under valgrind by scripts/test-c.sh: no invalid access, no leak.
 *
 * usage: gbt32960 MODEL.onnx
 */
#include <math.h>
#include <stdio.h>
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

#define VIN 'L', 'S', 'P', 'E', 'C', 'E', 'X', 'A', 'M', 'P', 'L', 'E', '0', '0', '0', '0', '1'

static const unsigned char REALTIME_2016[] = {
    0x23, 0x23, 0x02, 0xFE, VIN, 0x01, 0x00, 0x3C, 0x19, 0x03, 0x0A, 0x07, 0x14, 0x00,
    0x01, 0x01, 0x03, 0x01, 0x01, 0x6D, 0x00, 0x01, 0xD6, 0x19, 0x0D, 0xE6, 0x26, 0x95, 0x2A,
    0x01, 0x2E, 0x12, 0xC0, 0x14, 0x00,
    0x07, 0x01, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x08, 0x01, 0x01, 0x00, 0x4A, 0x26, 0x95, 0x00, 0x02, 0x00, 0x01, 0x02, 0x0E, 0x80, 0xFF, 0xFF,
    0x09, 0x01, 0x01, 0x00, 0x02, 0x41, 0xFF,
    0x00};

static const unsigned char REALTIME_2025[] = {
    0x24, 0x24, 0x02, 0xFE, VIN, 0x01, 0x00, 0x44, 0x19, 0x03, 0x0A, 0x07, 0x14, 0x00,
    0x01, 0x01, 0x03, 0x01, 0x01, 0x6D, 0x00, 0x01, 0xD6, 0x19, 0x0D, 0xE6, 0x74, 0xB5, 0x2A,
    0x01, 0x2E, 0x12, 0xC0,
    0x06, 0x01, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0A, 0x01,
    0x07, 0x01, 0x01, 0x00, 0x4A, 0x74, 0xB5, 0x00, 0x02, 0x0E, 0x80, 0xFF, 0xFF,
    0x08, 0x01, 0x01, 0x00, 0x02, 0x41, 0xFF,
    0xFF, 0x01, 0x00, 0x02, 0xA1, 0xA2, 0x00, 0x02, 0xB1, 0xB2, 0x94};

static const unsigned char HEARTBEAT_2016[] = {0x23, 0x23, 0x07, 0xFE, VIN, 0x01, 0x00, 0x00, 0xC8};

static void check_example_frame(const bms_gbt32960_frame *f, uint16_t edition, uint64_t offset) {
    CHECK(strcmp(f->vin, "LSPECEXAMPLE00001") == 0);
    CHECK(f->timestamp_ms == 1741562400000LL);
    CHECK(f->pack_voltage == 355.8);
    CHECK(f->pack_current == -12.3);
    CHECK(f->soc == 42.0);
    CHECK(f->n_cells == 2 && f->cells[0] == 3.712 && isnan(f->cells[1]));
    CHECK(f->n_temps == 2 && f->temps[0] == 25.0 && isnan(f->temps[1]));
    CHECK(f->alarm_flags == 0x400);
    CHECK(f->edition == edition);
    CHECK(f->command == 0x02);
    CHECK(f->offset == offset);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.onnx\n", argv[0]);
        return 2;
    }
    /* The stream: heartbeat, 2016 example with a wrong BCC, 2016 example, 2025 example. */
    unsigned char stream[sizeof HEARTBEAT_2016 + 2 * sizeof REALTIME_2016 + sizeof REALTIME_2025];
    size_t n = 0;
    memcpy(stream + n, HEARTBEAT_2016, sizeof HEARTBEAT_2016);
    n += sizeof HEARTBEAT_2016;
    size_t bad_at = n;
    memcpy(stream + n, REALTIME_2016, sizeof REALTIME_2016);
    n += sizeof REALTIME_2016;
    stream[n - 1] ^= 0x5A;
    size_t good16_at = n;
    memcpy(stream + n, REALTIME_2016, sizeof REALTIME_2016);
    n += sizeof REALTIME_2016;
    size_t good25_at = n;
    memcpy(stream + n, REALTIME_2025, sizeof REALTIME_2025);
    n += sizeof REALTIME_2025;

    bms_gbt32960_decoder *d = NULL;
    CHECK(bms_gbt32960_decoder_new(&d) == BMS_STATUS_OK && d != NULL);
    size_t got = 0, bad = 0;
    char bad_message[512] = "";
    for (size_t i = 0; i < n; i++) {
        CHECK(bms_gbt32960_decoder_push(d, stream + i, 1) == BMS_STATUS_OK);
        for (;;) {
            bms_gbt32960_frame f;
            bms_status s = bms_gbt32960_decoder_next_frame(d, &f);
            if (s == BMS_STATUS_NOT_READY) {
                break;
            } else if (s == BMS_STATUS_BAD_PACKET) {
                bad++;
                snprintf(bad_message, sizeof bad_message, "%s", bms_last_error_message());
            } else if (s == BMS_STATUS_OK && got < 2) {
                /* The frame borrows the decoder: check it before the next call. */
                if (++got == 1) {
                    check_example_frame(&f, 2016, good16_at);
                } else {
                    check_example_frame(&f, 2025, good25_at);
                }
            } else {
                CHECK(!"unexpected status or frame");
                break;
            }
        }
    }
    CHECK(bms_gbt32960_decoder_finish(d) == BMS_STATUS_OK);
    bms_gbt32960_frame f;
    CHECK(bms_gbt32960_decoder_next_frame(d, &f) == BMS_STATUS_NOT_READY);
    CHECK(got == 2);
    CHECK(bad == 1);
    char want[64];
    snprintf(want, sizeof want, "byte offset %zu, realtime report packet", bad_at);
    CHECK(strstr(bad_message, want) != NULL);
    CHECK(strstr(bad_message, "LSPECEXAMPLE00001") != NULL);

    bms_gbt32960_counts c;
    CHECK(bms_gbt32960_decoder_counts(d, &c) == BMS_STATUS_OK);
    CHECK(c.bytes == n);
    CHECK(c.packets == 3 && c.frames == 2 && c.errors == 1);
    CHECK(c.error_bytes == sizeof REALTIME_2016);
    CHECK(c.no_frame == 0 && c.replies == 0);

    /* A decoded frame goes to the monitor as is (re-decoded: the borrowed pointers of the
       frames above are no longer valid). */
    bms_model *model = NULL;
    bms_monitor *m = NULL;
    CHECK(bms_model_load(argv[1], &model) == BMS_STATUS_OK);
    CHECK(bms_monitor_new(model, NULL, &m) == BMS_STATUS_OK);
    bms_gbt32960_decoder *d2 = NULL;
    CHECK(bms_gbt32960_decoder_new(&d2) == BMS_STATUS_OK);
    CHECK(bms_gbt32960_decoder_push(d2, REALTIME_2025, sizeof REALTIME_2025) == BMS_STATUS_OK);
    CHECK(bms_gbt32960_decoder_next_frame(d2, &f) == BMS_STATUS_OK);
    CHECK(bms_monitor_push_frame(m, f.timestamp_ms, f.pack_voltage, f.pack_current, f.soc, f.cells,
                                 f.n_cells, f.temps, f.n_temps, f.alarm_flags) == BMS_STATUS_OK);
    int64_t day = 0;
    CHECK(bms_monitor_current_day(m, &day) == BMS_STATUS_OK && day == 1741562400000LL / 86400000);

    /* NULL arguments are refused, not crashed on. */
    CHECK(bms_gbt32960_decoder_new(NULL) == BMS_STATUS_NULL_POINTER);
    CHECK(bms_gbt32960_decoder_push(NULL, stream, 1) == BMS_STATUS_NULL_POINTER);
    CHECK(bms_gbt32960_decoder_push(d2, NULL, 5) == BMS_STATUS_NULL_POINTER);
    CHECK(bms_gbt32960_decoder_push(d2, NULL, 0) == BMS_STATUS_OK);
    CHECK(bms_gbt32960_decoder_next_frame(d2, NULL) == BMS_STATUS_NULL_POINTER);
    CHECK(bms_gbt32960_decoder_counts(NULL, &c) == BMS_STATUS_NULL_POINTER);
    bms_gbt32960_decoder_free(NULL);

    bms_gbt32960_decoder_free(d2);
    bms_gbt32960_decoder_free(d);
    bms_monitor_free(m);
    bms_model_free(model);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("gbt32960: ok\n");
    return 0;
}
