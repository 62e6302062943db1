/*
 * no_run.c: test fixture, a .so that reports ABI v1 but has no dispy_run. The node must refuse
 * it when loading it ("payload does not export `dispy_run`").
 *     cc -O2 -shared -fPIC -o no_run.so no_run.c
 */
#include <stdint.h>

uint32_t dispy_abi_version(void) { return 1; }

int32_t dispy_walk(void) { return 0; }
