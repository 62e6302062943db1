/*
 * hog.c: test fixture, a .so payload whose dispy_run allocates and touches 1 MiB blocks until
 * malloc fails, then writes through the null pointer, as careless code does. Under the worker's
 * address-space limit the node must report "payload exceeded its memory limit of ...".
 *     cc -O2 -shared -fPIC -o hog.so hog.c
 */
#include <stdlib.h>
#include <string.h>

#include "../dispy.h"

#define BLOCK (1u << 20)

/* Every block is linked from here, so the compiler cannot drop the allocations. */
struct block {
    struct block *next;
};
struct block *volatile blocks;

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)input; (void)input_len; (void)args; (void)args_len; (void)out;
    for (;;) {
        struct block *b = malloc(BLOCK);
        memset(b, 0xab, BLOCK); /* null when malloc failed: SIGSEGV */
        b->next = blocks;
        blocks = b;
    }
    return 0; /* not reached */
}
