/*
 * logs.c: test fixture, a .so payload that logs: it prints "stdout: <input>" with printf and
 * "stderr: <input>" with dispy_log (stderr), then emits its input. An input starting with '!'
 * crashes the worker (SIGSEGV) after logging; one starting with '*' writes 100 KiB to stderr
 * (more than an attempt's log keeps).
 *     cc -O2 -shared -fPIC -o logs.so logs.c
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "../dispy.h"

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)args; (void)args_len;
    size_t n = input_len;
    while (n > 0 && input[n - 1] == '\n') n--;
    printf("stdout: %.*s\n", (int)n, (const char *)input);
    char line[256];
    int len = snprintf(line, sizeof line, "stderr: %.*s", (int)n, (const char *)input);
    dispy_log(line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    if (n > 0 && input[0] == '*') {
        static char block[1024];
        memset(block, 'x', sizeof block);
        for (int i = 0; i < 100; i++) fwrite(block, 1, sizeof block, stderr);
    }
    if (n > 0 && input[0] == '!') {
        fflush(stdout);
        raise(SIGSEGV);
    }
    dispy_emit(out, input, input_len);
    return 0;
}
