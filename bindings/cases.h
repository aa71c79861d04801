/* cases.h - the data-driven rule cases of tests/cases, as a library.
 *
 * One implementation shared by the unit test (tests/unit/test_cases.c) and
 * `autorthanc test --cases DIR`.  A case is a folder holding a rule
 * (rule.json or rule.lua), a study fixture (fixture.json, or the file named
 * by "fixture" in expect.json) and expect.json: what must happen (format in
 * tests/cases/README.md).  Each case runs in a fresh engine (default
 * budgets, so a case gives the same answer wherever it runs); expect.json
 * and the fixture are decoded by lua-cjson in a lua_State of this module's
 * own.  A JSON rule is run a second time as the Lua it compiles to, which
 * must decide and plan the same.  Nothing here prints: results go to the
 * caller's callback.
 */
#ifndef AR_CASES_H
#define AR_CASES_H

#include <stddef.h>

/* Called once per case, in name order: ok 1/0, msg says why it failed. */
typedef void (*ar_case_report_fn)(void *ud, const char *name, int ok, const char *msg);

/* Run every case folder under root whose name does not start with '_' or
 * '.' and contains `filter` (NULL: all); *passed and *failed count them.
 * Returns AR_OK, or an error (message in err) when root can't be read or
 * holds no case at all. */
int ar_cases_run_dir(const char *root, const char *filter, ar_case_report_fn report, void *ud,
                     int *passed, int *failed, char *err, size_t errlen);

#endif
