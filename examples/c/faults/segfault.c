/*
 * segfault.c: test fixture, a .so payload whose dispy_run writes through a null pointer. The
 * node must report "worker crashed with SIGSEGV" and keep running.
 *     cc -O2 -shared -fPIC -o segfault.so segfault.c
 */
#include "../dispy.h"

/* Volatile, so the compiler cannot prove the write undefined and drop or reorder it. */
static volatile uint8_t *volatile nowhere = 0;

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)input; (void)input_len; (void)args; (void)args_len; (void)out;
    *nowhere = 1;
    return 0;
}
