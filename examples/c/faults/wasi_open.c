/*
 * wasi_open.c: test fixture, a WASI filter that tries to read /etc/passwd and to create a file
 * in the current directory. A filter gets no preopened directories, so both fail; it then exits
 * with code 2 after printing why to stderr. Were either to succeed it would exit 0 and print
 * "escaped" on stdout.
 *     clang --target=wasm32-wasi -O2 -o wasi_open.wasm wasi_open.c
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    FILE *f = fopen("/etc/passwd", "r");
    FILE *g = fopen("dispy-escape.txt", "w");
    if (f != NULL || g != NULL) {
        printf("escaped\n");
        return 0;
    }
    fprintf(stderr, "open denied: %s\n", strerror(errno));
    return 2;
}
