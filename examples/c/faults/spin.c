/*
 * spin.c: test fixture, a .so payload whose dispy_run never returns. The node must kill the
 * worker at the chunk's time limit ("chunk exceeded its time limit of 1s").
 *     cc -O2 -shared -fPIC -o spin.so spin.c
 */
#include "../dispy.h"

static volatile uint64_t spins;

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)input; (void)input_len; (void)args; (void)args_len; (void)out;
    for (;;) {
        spins++;
    }
    return 0; /* not reached */
}
