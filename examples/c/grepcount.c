/*
 * grepcount.c: counts the lines of each chunk that contain the job's argument string, and emits
 * the count as decimal text and a newline ("42\n"). Empty arguments match every line.
 *
 * Use with the split rule `lines:N`, which never cuts a line, so the per-chunk counts add up to
 * the count over the whole input. A line is the bytes up to and including a '\n'; a final line
 * without one counts too.
 *     cc -O2 -shared -fPIC -o grepcount.so grepcount.c
 *     clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o grepcount.wasm grepcount.c
 *     dispy-submit run --payload grepcount.so --input access.log --split lines:100000 \
 *         --args "GET /index.html" --output counts.txt
 */
#include "dispy.h"

/* Whether needle occurs in line[0..len). */
static int contains(const uint8_t *line, size_t len, const uint8_t *needle, size_t needle_len) {
    if (needle_len > len) {
        return 0;
    }
    for (size_t i = 0; i + needle_len <= len; i++) {
        size_t j = 0;
        while (j < needle_len && line[i + j] == needle[j]) {
            j++;
        }
        if (j == needle_len) {
            return 1;
        }
    }
    return 0;
}

DISPY_RUN(input, input_len, args, args_len, out) {
    uint64_t count = 0;
    size_t start = 0;
    while (start < input_len) {
        size_t end = start;
        while (end < input_len && input[end] != '\n') {
            end++;
        }
        count += (uint64_t)contains(input + start, end - start, args, args_len);
        start = end + 1;
    }
    uint8_t text[24];
    size_t len = sizeof text;
    text[--len] = '\n';
    do {
        text[--len] = (uint8_t)('0' + count % 10);
        count /= 10;
    } while (count != 0);
    dispy_emit(out, text + len, sizeof text - len);
    return 0;
}
