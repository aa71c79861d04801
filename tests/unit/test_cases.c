/* test_cases.c - runs the data-driven rule cases of tests/cases.
 *
 * The cases and what expect.json may say are described in
 * tests/cases/README.md; the runner itself is bindings/cases.c, the same one
 * `autorthanc test --cases tests/cases` uses.  One line per failing case,
 * then "N passed, N failed" (tap.h).  Set AR_CASE=<substring> to run only
 * the cases whose name contains it.
 */
#include <stdio.h>
#include <stdlib.h>

#include "../../bindings/cases.h"
#include "tap.h"

static void report(void *ud, const char *name, int ok, const char *msg)
{
    (void)ud;
    CHECK(ok, "%s: %s", name, msg);
}

int main(void)
{
    const char *src = getenv("AR_SOURCE_DIR"), *only = getenv("AR_CASE");
    char root[4096], err[2048] = "";
    int passed = 0, failed = 0;

    snprintf(root, sizeof root, "%s/tests/cases", src ? src : ".");
    if (ar_cases_run_dir(root, only, report, NULL, &passed, &failed, err, sizeof err))
        CHECK(0, "%s (set AR_SOURCE_DIR)", err);
    return tap_done();
}
