/*
 * mandelbrot.c: renders the Mandelbrot set as a greyscale PGM image; the same payload as
 * ../mandelbrot.wat, with byte-identical output for the same arguments and chunks.
 *
 * Use with the split rule `range:0..HEIGHT:ROWS`: each chunk's input is 16 bytes, two
 * little-endian u64 values START and END, and the chunk renders rows START..END (END excluded).
 * The chunk that starts at row 0 (and is not empty) first emits the header
 * "P5\n{WIDTH} {HEIGHT}\n255\n", so the outputs concatenated in order are a valid PGM file.
 *
 * Arguments (ASCII): "WIDTH HEIGHT MAX_ITER", three decimal numbers from 1 to 1000000 separated
 * by whitespace; empty arguments mean "1024 1024 256".
 *
 * Pixel (x, y) samples c = cx + i*cy with cx = -2.0 + (3.0 * x) / WIDTH and
 * cy = -1.5 + (3.0 * y) / HEIGHT, iterates z = z*z + c from z = 0 until |z|^2 > 4.0 or MAX_ITER
 * iterations, and its grey level is 255 - iterations * 255 / MAX_ITER (integer division).
 * Only IEEE double add, multiply and divide, in the same order as the WAT, so results are exact
 * on every target as long as the compiler does not fuse multiply-adds: build with
 * -ffp-contract=off (x86-64 and wasm32 have no fused multiply-add by default; aarch64 does).
 *
 * Return codes: 1 = bad arguments (from dispy_setup), 2 = dispy_setup did not run, 3 = the input
 * is not 16 bytes, 4 = START > END or END > HEIGHT.
 *
 *     cc -O2 -ffp-contract=off -shared -fPIC -o mandelbrot.so mandelbrot.c
 *     clang --target=wasm32 -O2 -ffp-contract=off -nostdlib -Wl,--no-entry \
 *         -o mandelbrot.wasm mandelbrot.c
 */
#include "dispy.h"

/* Image parameters, set once per worker by dispy_setup. */
static uint32_t width, height, max_iter;
static int ready;

/* Rows are rendered into this buffer and emitted whenever it fills: no heap needed. */
static uint8_t pixels[4096];

static int is_space(uint8_t c) {
    return c == ' ' || (c >= 9 && c <= 13);
}

static size_t skip_spaces(const uint8_t *s, size_t p, size_t end) {
    while (p < end && is_space(s[p])) {
        p++;
    }
    return p;
}

/* Reads a number from 1 to 1000000 at s[p]; returns the position after it, or (size_t)-1. */
static size_t parse_number(const uint8_t *s, size_t p, size_t end, uint32_t *value) {
    size_t start = p;
    uint32_t n = 0;
    while (p < end && s[p] >= '0' && s[p] <= '9') {
        n = n * 10 + (uint32_t)(s[p] - '0');
        if (n > 1000000) {
            return (size_t)-1;
        }
        p++;
    }
    if (p == start || n == 0) {
        return (size_t)-1;
    }
    *value = n;
    return p;
}

DISPY_SETUP(args, args_len) {
    size_t p = skip_spaces(args, 0, args_len);
    if (p == args_len) {
        width = 1024;
        height = 1024;
        max_iter = 256;
        ready = 1;
        return 0;
    }
    uint32_t *fields[3] = {&width, &height, &max_iter};
    for (int i = 0; i < 3; i++) {
        p = parse_number(args, skip_spaces(args, p, args_len), args_len, fields[i]);
        if (p == (size_t)-1) {
            return 1;
        }
    }
    if (skip_spaces(args, p, args_len) != args_len) {
        return 1;
    }
    ready = 1;
    return 0;
}

/* Writes n in decimal at buf and returns the number of digits. */
static size_t write_number(uint8_t *buf, uint32_t n) {
    uint8_t digits[10];
    size_t count = 0;
    do {
        digits[count++] = (uint8_t)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    for (size_t i = 0; i < count; i++) {
        buf[i] = digits[count - 1 - i];
    }
    return count;
}

static void emit_header(dispy_out *out) {
    uint8_t header[32];
    size_t len = 0;
    header[len++] = 'P';
    header[len++] = '5';
    header[len++] = '\n';
    len += write_number(header + len, width);
    header[len++] = ' ';
    len += write_number(header + len, height);
    header[len++] = '\n';
    header[len++] = '2';
    header[len++] = '5';
    header[len++] = '5';
    header[len++] = '\n';
    dispy_emit(out, header, len);
}

static uint8_t pixel(uint32_t x, double cy) {
    double cx = -2.0 + (3.0 * (double)x) / (double)width;
    double zr = 0.0, zi = 0.0;
    uint32_t i = 0;
    while (i < max_iter) {
        double zr2 = zr * zr;
        double zi2 = zi * zi;
        if (zr2 + zi2 > 4.0) {
            break;
        }
        /* z = z*z + c, the imaginary part first since it needs the old real part. */
        zi = 2.0 * zr * zi + cy;
        zr = zr2 - zi2 + cx;
        i++;
    }
    return (uint8_t)(255u - i * 255u / max_iter);
}

static uint64_t read_u64_le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)args;
    (void)args_len;
    if (!ready) {
        return 2;
    }
    if (input_len != 16) {
        return 3;
    }
    uint64_t start = read_u64_le(input), end = read_u64_le(input + 8);
    if (start > end || end > height) {
        return 4;
    }
    if (start == 0 && start != end) {
        emit_header(out);
    }
    size_t filled = 0;
    for (uint32_t y = (uint32_t)start; y < end; y++) {
        double cy = -1.5 + (3.0 * (double)y) / (double)height;
        for (uint32_t x = 0; x < width; x++) {
            pixels[filled++] = pixel(x, cy);
            if (filled == sizeof pixels) {
                dispy_emit(out, pixels, filled);
                filled = 0;
            }
        }
    }
    if (filled != 0) {
        dispy_emit(out, pixels, filled);
    }
    return 0;
}
