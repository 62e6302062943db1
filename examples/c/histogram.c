/*
 * histogram.c: a byte histogram of the input, reduced on the nodes. For every chunk dispy_run
 * emits 256 little-endian u64 counts (how many times each byte value occurs); DISPY_COMBINE adds
 * two histograms count by count. With `--results reduce` the output is the histogram of the whole
 * input (2 KiB), whatever the split rule; with `--results concat`, one histogram per chunk.
 * Arguments are ignored.
 *     cc -O2 -shared -fPIC -o histogram.so histogram.c
 *     clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o histogram.wasm histogram.c
 *     dispy-submit run --payload histogram.so --input big.bin --split bytes:4MiB \
 *         --results reduce --output histogram.bin
 */
#include "dispy.h"

#define BINS 256

/* Zero between calls: emit_counts clears each count as it emits it (a loop of its own would
 * become a call to memset, which a -nostdlib wasm32 build lacks). */
static uint64_t counts[BINS];

/* Emits `counts` as 256 little-endian u64 values, whatever the host's byte order, and clears it. */
static void emit_counts(dispy_out *out) {
    uint8_t bytes[8];
    for (int bin = 0; bin < BINS; bin++) {
        for (int i = 0; i < 8; i++) {
            bytes[i] = (uint8_t)(counts[bin] >> (8 * i));
        }
        counts[bin] = 0;
        dispy_emit(out, bytes, sizeof bytes);
    }
}

static uint64_t load_le(const uint8_t *p) {
    uint64_t value = 0;
    for (int i = 7; i >= 0; i--) {
        value = (value << 8) | p[i];
    }
    return value;
}

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)args;
    (void)args_len;
    for (size_t i = 0; i < input_len; i++) {
        counts[input[i]]++;
    }
    emit_counts(out);
    return 0;
}

DISPY_COMBINE(a, a_len, b, b_len, out) {
    if (a_len != BINS * 8 || b_len != BINS * 8) {
        return 1; /* not two histograms */
    }
    for (int bin = 0; bin < BINS; bin++) {
        counts[bin] = load_le(a + 8 * bin) + load_le(b + 8 * bin);
    }
    emit_counts(out);
    return 0;
}
