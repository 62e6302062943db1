/*
 * checksum.c: the FNV-1a 64-bit hash of each chunk, emitted as 8 little-endian bytes. The same
 * payload as ../checksum.wat and sdk/examples/checksum.rs, with byte-identical output.
 *
 * Use with the split rule `bytes:SIZE`; arguments are ignored.
 *     cc -O2 -shared -fPIC -o checksum.so checksum.c
 *     clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o checksum.wasm checksum.c
 */
#include "dispy.h"

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)args;
    (void)args_len;
    /* Offset basis, then for each byte: xor it in, multiply by the prime. */
    uint64_t hash = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < input_len; i++) {
        hash = (hash ^ input[i]) * 0x100000001b3ull;
    }
    /* Little-endian whatever the host's byte order. */
    uint8_t bytes[8];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (uint8_t)(hash >> (8 * i));
    }
    dispy_emit(out, bytes, sizeof bytes);
    return 0;
}
