/*
 * bad_version.c: test fixture, a .so payload that reports dispy ABI v2. The node must refuse it
 * when loading it, before any chunk runs. Does not include dispy.h, which defines version 1.
 *     cc -O2 -shared -fPIC -o bad_version.so bad_version.c
 */
#include <stddef.h>
#include <stdint.h>

uint32_t dispy_abi_version(void) { return 2; }

int32_t dispy_run(const uint8_t *input, size_t input_len, const uint8_t *args, size_t args_len,
                  void (*emit)(void *, const uint8_t *, size_t), void *ctx) {
    (void)input; (void)input_len; (void)args; (void)args_len; (void)emit; (void)ctx;
    return 0;
}
