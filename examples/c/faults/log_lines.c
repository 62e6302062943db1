/*
 * log_lines.c: test fixture, a payload of either kind that logs through dispy_log (the dispy.log
 * import on wasm32, stderr natively): "got a chunk", then the chunk itself as one line. It emits
 * nothing.
 *     cc -O2 -shared -fPIC -o log_lines.so log_lines.c
 *     clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o log_lines.wasm log_lines.c
 */
#include "../dispy.h"

DISPY_RUN(input, input_len, args, args_len, out) {
    (void)args; (void)args_len; (void)out;
    dispy_log("got a chunk", 11);
    dispy_log((const char *)input, input_len);
    return 0;
}
