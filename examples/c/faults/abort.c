/*
 * abort.c: test fixture, a .so payload whose dispy_run calls abort() after printing to stderr
 * (as a failed assert does). The node must report "worker crashed with SIGABRT".
 *     cc -O2 -shared -fPIC -o abort.so abort.c
 */
#include <stdio.h>
#include <stdlib.h>

#include "../dispy.h"

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)input; (void)input_len; (void)args; (void)args_len; (void)out;
    fprintf(stderr, "abort.c: giving up on purpose\n");
    abort();
}
