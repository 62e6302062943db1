/*
 * wasi_args.c: test fixture, a WASI filter that prints its argv, one argument a line as
 * "[i]=value", then copies stdin to stdout, so tests can check how job arguments become argv.
 *     clang --target=wasm32-wasi -O2 -o wasi_args.wasm wasi_args.c
 */
#include <stdio.h>

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        printf("[%d]=%s\n", i, argv[i]);
    }
    int c;
    while ((c = getchar()) != EOF) {
        putchar(c);
    }
    return 0;
}
