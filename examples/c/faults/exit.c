/*
 * exit.c: test fixture, a .so payload whose dispy_run calls exit(3). The node must report
 * "payload called exit(3)" and start a fresh worker for the next chunk.
 *     cc -O2 -shared -fPIC -o exit.so exit.c
 */
#include <stdlib.h>

#include "../dispy.h"

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)input; (void)input_len; (void)args; (void)args_len; (void)out;
    exit(3);
}
