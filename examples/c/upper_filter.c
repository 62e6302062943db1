/*
 * upper_filter.c: a WASI filter (a plain C program for wasm32-wasi): reads the chunk on stdin
 * and writes it to stdout with ASCII letters uppercased, so its output matches ../upper.wat.
 * With the argument "--lower" it lowercases instead. The exit code is the chunk's status:
 * 0 = success, anything else is reported as a payload error with that code.
 *
 * Use with the split rule `lines:N`. A filter runs with no files, no network and no environment;
 * its arguments are the job's arguments split on whitespace, after argv[0] = "payload".
 *     clang --target=wasm32-wasi -O2 -o upper_filter.wasm upper_filter.c
 *     dispy-submit run --payload upper_filter.wasm --input book.txt --split lines:1000 \
 *         --output BOOK.txt
 */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    int lower = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--lower") == 0) {
            lower = 1;
        } else {
            fprintf(stderr, "upper_filter: unknown argument %s\n", argv[i]);
            return 64;
        }
    }
    static char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        for (size_t i = 0; i < n; i++) {
            char c = buf[i];
            if (!lower && c >= 'a' && c <= 'z') {
                buf[i] = (char)(c - 32);
            } else if (lower && c >= 'A' && c <= 'Z') {
                buf[i] = (char)(c + 32);
            }
        }
        if (fwrite(buf, 1, n, stdout) != n) {
            return 74;
        }
    }
    return ferror(stdin) ? 74 : 0;
}
