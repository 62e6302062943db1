/*
 * chatty.c: test fixture, a .so payload that writes a lot to stdout and stderr (far more than a
 * socket buffer holds) while it runs, then emits 4 MiB plus the input. The node must keep
 * draining the worker's output while it waits, or both would block forever.
 *     cc -O2 -shared -fPIC -o chatty.so chatty.c
 */
#include <stdio.h>

#include "../dispy.h"

static uint8_t block[65536];

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)args; (void)args_len;
    for (int i = 0; i < 20000; i++) {
        fprintf(stderr, "chatty: line %d of noise on stderr\n", i);
        printf("chatty: line %d of noise on stdout\n", i);
    }
    fflush(stdout);
    for (size_t i = 0; i < sizeof block; i++) {
        block[i] = (uint8_t)i;
    }
    for (int i = 0; i < 64; i++) {
        dispy_emit(out, block, sizeof block);
    }
    dispy_emit(out, input, input_len);
    fprintf(stderr, "chatty: done\n");
    return 0;
}
