/*
 * dispy.h: the dispy payload ABI v1 for C authors, for native shared libraries (.so) and for
 * WebAssembly modules (wasm32), from one source file.
 *
 * A payload is one function from a chunk's bytes and the job's argument bytes to output bytes.
 * Write it with the DISPY_RUN macro and emit output with dispy_emit; the job's output for a chunk
 * is everything emitted, concatenated in order. Return 0 for success, non-zero for a payload
 * error (reported to the user with the code and not retried). Optionally write DISPY_SETUP, which
 * runs once per worker before its first chunk, to parse arguments or build tables; a worker
 * (a native worker process or a WebAssembly instance) serves many chunks of one job in turn, so
 * state kept in static variables carries over from chunk to chunk.
 *
 *     #include "dispy.h"
 *
 *     DISPY_RUN(input, input_len, args, args_len, out) {
 *         dispy_emit(out, input, input_len);      // echo the chunk
 *         return 0;
 *     }
 *
 * Include this header in exactly one .c file per payload: it defines the exported functions.
 *
 * Build (see Makefile in this directory and docs/payloads.md):
 *     cc -O2 -shared -fPIC -o echo.so echo.c
 *     clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o echo.wasm echo.c
 *
 * ---- The native ABI (.so) -------------------------------------------------------------------
 *     typedef void (*dispy_emit_fn)(void *ctx, const uint8_t *data, size_t len);
 *     int32_t  dispy_run(const uint8_t *input, size_t input_len,
 *                        const uint8_t *args, size_t args_len,
 *                        dispy_emit_fn emit, void *ctx);
 *     uint32_t dispy_abi_version(void);                             // returns 1
 *     int32_t  dispy_setup(const uint8_t *args, size_t args_len);   // optional
 *     int32_t  dispy_combine(const uint8_t *a, size_t a_len,        // optional: reduce jobs
 *                            const uint8_t *b, size_t b_len,
 *                            dispy_emit_fn emit, void *ctx);
 * The node runs the library in a worker process of its own (never in the daemon), with an
 * address-space limit (the job's memory limit plus a little for the worker itself), a CPU-time
 * limit and a wall-clock timeout. A crash (SIGSEGV, abort(), ...), a call to exit(), a timeout or
 * running out of memory fails the chunk with a message naming the cause; the chunk is retried on
 * another worker. `input` and `args` stay valid only during the call; `emit` copies the bytes
 * before it returns and may only be called during dispy_run, from the thread that called it.
 * Do not read stdin. Everything written to stdout and stderr during a chunk (and during
 * dispy_setup, counted with the first chunk) is captured as that attempt's log, up to 64 KiB
 * (then "[dispy: log truncated, N bytes dropped]"), and shown by `dispy-submit logs JOB`; the
 * worker flushes stdio after every call, but a crash loses what stdout still buffered, so write
 * diagnostics to stderr (unbuffered) or call dispy_log.
 *
 * ---- The WebAssembly ABI (wasm32) -----------------------------------------------------------
 *     export memory
 *     export dispy_alloc(len: i32) -> i32          // memory for the host to copy bytes into
 *     export dispy_run(in_ptr, in_len, args_ptr, args_len: i32) -> i32
 *     export dispy_abi_version() -> i32             // optional; returns 1
 *     export dispy_setup(args_ptr, args_len: i32) -> i32   // optional
 *     export dispy_combine(a_ptr, a_len, b_ptr, b_len: i32) -> i32   // optional: reduce jobs
 *     import dispy.emit(ptr: i32, len: i32)
 *     import dispy.log(ptr: i32, len: i32)          // optional: one line of the attempt's log
 * Built with -nostdlib there is no libc: no malloc, printf or memcpy (write loops, or use
 * static buffers). This header provides dispy_alloc, a bump allocator over the memory after the
 * program's data: the host allocates the job's arguments once per worker, then each chunk's input
 * right before dispy_run, and the DISPY_RUN wrapper frees the input and anything allocated during
 * the chunk when dispy_run returns. Payload code may call dispy_alloc for scratch space too.
 *
 * ---- Logs (both kinds) ----------------------------------------------------------------------
 *     dispy_log(const char *line, size_t len);   // one line of this attempt's log
 * On wasm32 it calls the optional import dispy.log (a module that never calls it does not
 * import it); natively it writes the line to stderr. A newline is added when the line lacks one.
 * Each attempt keeps its first 64 KiB of log; `dispy-submit logs JOB [--chunk N]` prints it.
 */
#ifndef DISPY_H
#define DISPY_H

#include <stddef.h>
#include <stdint.h>

/* The ABI version dispy_abi_version returns. */
#define DISPY_ABI_VERSION 1u

/* The host's output callback on native targets. */
typedef void (*dispy_emit_fn)(void *ctx, const uint8_t *data, size_t len);

/* Where a chunk's output goes; pass the `out` of DISPY_RUN to dispy_emit. */
typedef struct dispy_out {
    dispy_emit_fn emit; /* the host's callback (native); unused on wasm32 */
    void *ctx;          /* the host's context for it (native); unused on wasm32 */
} dispy_out;

#if defined(__wasm32__)

#define DISPY_EXPORT(name) __attribute__((export_name(name), visibility("default")))

/* The host function `dispy.emit(ptr, len)`. */
__attribute__((import_module("dispy"), import_name("emit")))
void dispy__host_emit(const uint8_t *data, size_t len);

/* Appends `len` bytes at `data` to the chunk's output. */
static inline void dispy_emit(dispy_out *out, const void *data, size_t len) {
    (void)out;
    dispy__host_emit((const uint8_t *)data, len);
}

/* The optional host function `dispy.log(ptr, len)`. */
__attribute__((import_module("dispy"), import_name("log")))
void dispy__host_log(const uint8_t *data, size_t len);

/* Appends one line to this attempt's log. */
static inline void dispy_log(const char *line, size_t len) {
    dispy__host_log((const uint8_t *)line, len);
}

/* The first byte after the program's static data and stack, provided by wasm-ld. */
extern unsigned char __heap_base;
static uintptr_t dispy__heap;

/* Bump allocator: `len` bytes, 8-byte aligned, growing memory as needed; traps when memory
 * cannot grow (the host reports that as exceeding the memory limit). */
DISPY_EXPORT("dispy_alloc") void *dispy_alloc(size_t len) {
    if (dispy__heap == 0) {
        dispy__heap = (uintptr_t)&__heap_base;
    }
    uintptr_t ptr = (dispy__heap + 7u) & ~(uintptr_t)7u;
    uintptr_t end = ptr + len;
    if (ptr < dispy__heap || end < ptr) {
        __builtin_trap();
    }
    /* Pages needed for [0, end), in 64 bits so a full 4 GiB memory does not overflow. */
    unsigned long long need = ((unsigned long long)end + 65535u) >> 16;
    unsigned long long have = __builtin_wasm_memory_size(0);
    if (need > have && __builtin_wasm_memory_grow(0, (size_t)(need - have)) == (size_t)-1) {
        __builtin_trap();
    }
    dispy__heap = end;
    return (void *)ptr;
}

/* Frees everything allocated at or after `mark` (a pointer dispy_alloc returned). */
static inline void dispy__release(const void *mark) {
    if ((uintptr_t)mark >= (uintptr_t)&__heap_base && (uintptr_t)mark < dispy__heap) {
        dispy__heap = (uintptr_t)mark;
    }
}

/* Defines dispy_run; the body follows the macro, with the parameters named as given. The
 * wrapper frees the chunk's input (the newest allocation, see above) and everything allocated
 * after it once the body returns. */
#define DISPY_RUN(input, input_len, args, args_len, out)                                         \
    static int32_t dispy__run(const uint8_t *input, size_t input_len, const uint8_t *args,       \
                              size_t args_len, dispy_out *out);                                  \
    DISPY_EXPORT("dispy_run") int32_t dispy_run(const uint8_t *in_, size_t in_len_,              \
                                                const uint8_t *args_, size_t args_len_) {        \
        dispy_out out_ = {0, 0};                                                                 \
        int32_t code_ = dispy__run(in_, in_len_, args_, args_len_, &out_);                       \
        dispy__release(in_);                                                                     \
        return code_;                                                                            \
    }                                                                                            \
    static int32_t dispy__run(const uint8_t *input, size_t input_len, const uint8_t *args,       \
                              size_t args_len, dispy_out *out)

/* Defines the optional dispy_combine (see DISPY_COMBINE below) on wasm32: both results were
 * placed with one dispy_alloc call, `b` right after `a`; the wrapper frees them (and anything
 * allocated during the call) once the body returns. */
#define DISPY_COMBINE(a, a_len, b, b_len, out)                                                   \
    static int32_t dispy__combine(const uint8_t *a, size_t a_len, const uint8_t *b,              \
                                  size_t b_len, dispy_out *out);                                 \
    DISPY_EXPORT("dispy_combine") int32_t dispy_combine(const uint8_t *a_, size_t a_len_,        \
                                                        const uint8_t *b_, size_t b_len_) {      \
        dispy_out out_ = {0, 0};                                                                 \
        int32_t code_ = dispy__combine(a_, a_len_, b_, b_len_, &out_);                           \
        dispy__release(a_);                                                                      \
        return code_;                                                                            \
    }                                                                                            \
    static int32_t dispy__combine(const uint8_t *a, size_t a_len, const uint8_t *b,              \
                                  size_t b_len, dispy_out *out)

#else /* native */

#define DISPY_EXPORT(name) __attribute__((visibility("default")))

/* Appends `len` bytes at `data` to the chunk's output. */
static inline void dispy_emit(dispy_out *out, const void *data, size_t len) {
    out->emit(out->ctx, (const uint8_t *)data, len);
}

#include <stdio.h>

/* Appends one line to this attempt's log: stderr, which the node captures per attempt. */
static inline void dispy_log(const char *line, size_t len) {
    fwrite(line, 1, len, stderr);
    if (len == 0 || line[len - 1] != '\n') fputc('\n', stderr);
}

/* Defines dispy_run; the body follows the macro, with the parameters named as given. */
#define DISPY_RUN(input, input_len, args, args_len, out)                                         \
    static int32_t dispy__run(const uint8_t *input, size_t input_len, const uint8_t *args,       \
                              size_t args_len, dispy_out *out);                                  \
    DISPY_EXPORT("dispy_run") int32_t dispy_run(const uint8_t *in_, size_t in_len_,              \
                                                const uint8_t *args_, size_t args_len_,          \
                                                dispy_emit_fn emit_, void *ctx_) {               \
        dispy_out out_ = {emit_, ctx_};                                                          \
        return dispy__run(in_, in_len_, args_, args_len_, &out_);                                \
    }                                                                                            \
    static int32_t dispy__run(const uint8_t *input, size_t input_len, const uint8_t *args,       \
                              size_t args_len, dispy_out *out)

/* Defines the optional dispy_combine natively (see the note below). */
#define DISPY_COMBINE(a, a_len, b, b_len, out)                                                   \
    static int32_t dispy__combine(const uint8_t *a, size_t a_len, const uint8_t *b,              \
                                  size_t b_len, dispy_out *out);                                 \
    DISPY_EXPORT("dispy_combine") int32_t dispy_combine(const uint8_t *a_, size_t a_len_,        \
                                                        const uint8_t *b_, size_t b_len_,        \
                                                        dispy_emit_fn emit_, void *ctx_) {       \
        dispy_out out_ = {emit_, ctx_};                                                          \
        return dispy__combine(a_, a_len_, b_, b_len_, &out_);                                    \
    }                                                                                            \
    static int32_t dispy__combine(const uint8_t *a, size_t a_len, const uint8_t *b,              \
                                  size_t b_len, dispy_out *out)

#endif

/* DISPY_COMBINE(a, a_len, b, b_len, out) { ... } defines the optional dispy_combine, which jobs
 * with `--results reduce` (job key results = "reduce") need: it emits, with dispy_emit(out, ...),
 * the combination of two results, `a` being that of the chunks just before `b`'s. It must be
 * associative (combine(combine(x, y), z) == combine(x, combine(y, z))); dispy never assumes it
 * is commutative and only ever combines adjacent ranges, left before right, tree-wise on the
 * nodes. Its results are combined again, so it must accept what it emits as well as what
 * DISPY_RUN emits. Return 0 for success; non-zero, a crash or a timeout fails the combine like a
 * chunk (retried, then the job fails naming the chunks it combined). */

/* Defines the optional dispy_setup, run once per worker before its first chunk; the body
 * follows the macro. Return 0, or non-zero to fail the worker's setup. */
#define DISPY_SETUP(args, args_len)                                                              \
    DISPY_EXPORT("dispy_setup") int32_t dispy_setup(const uint8_t *args, size_t args_len)

/* Every payload reports the ABI version it was built for (required for .so payloads). */
DISPY_EXPORT("dispy_abi_version") uint32_t dispy_abi_version(void) {
    return DISPY_ABI_VERSION;
}

#endif /* DISPY_H */
