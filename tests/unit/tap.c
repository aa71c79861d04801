/* tap.c - see tap.h */
#include "tap.h"

#include <stdarg.h>
#include <stdio.h>

static int passed, failed;

void tap_check(int ok, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    if (ok) {
        passed++;
        return;
    }
    failed++;
    fprintf(stdout, "not ok %d - %s:%d: ", passed + failed, file, line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
}

int tap_done(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : (passed ? 0 : 1);
}
