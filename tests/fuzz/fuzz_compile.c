/* fuzz_compile.c - libFuzzer target: arbitrary bytes as a JSON rule file.
 *
 * Each input is written to <tmp>/x.json and loaded with
 * ar_engine_load_rule_files into a fresh engine (bindings/engine.h has no
 * in-memory loader).  A rule that loads is then taken as far as the daemon
 * takes it: its Lua source (check --emit-lua), its verdicts on the studies
 * of tests/cases/_fixtures (all levels), and the export plan of every match,
 * whose folder and file paths must stay below the storage root ("x/..." with
 * no empty, "." or ".." component, no leading '/').  The engine is freed
 * after each input, so LeakSanitizer sees anything an input leaks.  Rule
 * budgets are small (a fuzzer input that loops is stopped by the engine, as
 * a user's rule would be).  Any crash, sanitizer report or broken promise
 * aborts.
 *
 * AR_FUZZ_FIXTURE_DIR (compile-time) is the fixtures folder; the environment
 * variable of the same name overrides it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "engine.h"

#ifndef AR_FUZZ_FIXTURE_DIR
#define AR_FUZZ_FIXTURE_DIR "tests/cases/_fixtures"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fixture_names[] = {"mr_brain.json", "hostile.json", "sparse.json"};
#define NFIXTURES (sizeof fixture_names / sizeof fixture_names[0])

static char g_dir[256];
static char g_rule[300];
static char *g_fixture[NFIXTURES];
static size_t g_fixture_len[NFIXTURES];

static void die(const char *what)
{
    fprintf(stderr, "fuzz_compile: %s\n", what);
    abort();
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            buf[n] = '\0';
            *len = (size_t)n;
        } else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

static void quiet_print(void *ud, const char *rule, const char *line)
{
    (void)ud;
    (void)rule;
    (void)line;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    const char *fixtures = getenv("AR_FUZZ_FIXTURE_DIR");
    if (!fixtures)
        fixtures = AR_FUZZ_FIXTURE_DIR;
    snprintf(g_dir, sizeof g_dir, "%s/ar-fuzz-compile-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir))
        die("mkdtemp failed");
    snprintf(g_rule, sizeof g_rule, "%s/x.json", g_dir);
    for (size_t i = 0; i < NFIXTURES; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", fixtures, fixture_names[i]);
        g_fixture[i] = slurp(path, &g_fixture_len[i]);
        if (!g_fixture[i]) {
            fprintf(stderr, "fuzz_compile: cannot read fixture %s: %s\n", path, strerror(errno));
            abort();
        }
    }
    ar_log_setup(AR_LOG_ERROR, 0);
    return 0;
}

static void write_rule(const uint8_t *data, size_t size)
{
    int fd = open(g_rule, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die("cannot create the rule file");
    while (size) {
        ssize_t w = write(fd, data, size);
        if (w <= 0)
            die("cannot write the rule file");
        data += w;
        size -= (size_t)w;
    }
    close(fd);
}

/* A path below the storage root: relative, '/'-joined plain names. */
static void check_rel(const char *what, const char *p)
{
    if (!p || !*p || *p == '/') {
        fprintf(stderr, "fuzz_compile: %s is empty or absolute: '%s'\n", what, p ? p : "(null)");
        abort();
    }
    for (const char *c = p;;) {
        size_t len = strcspn(c, "/");
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) {
            fprintf(stderr, "fuzz_compile: %s has an empty, '.' or '..' component: '%s'\n",
                    what, p);
            abort();
        }
        if (len > 255) {
            fprintf(stderr, "fuzz_compile: %s has a component over 255 bytes: '%s'\n", what, p);
            abort();
        }
        c += len;
        if (!*c)
            break;
        c++;
    }
}

static void check_string(const char *what, const char *s, size_t cap)
{
    if (memchr(s, '\0', cap) == NULL) {
        fprintf(stderr, "fuzz_compile: %s is not NUL-terminated\n", what);
        abort();
    }
}

static void exercise(ar_engine *e)
{
    char err[2048];
    const ar_rule_info *ri = ar_engine_rule(e, 0);
    if (!ri)
        die("a loaded rule file gave no rule");
    check_string("rule name", ri->name, sizeof ri->name);
    check_string("rule error", ri->error, sizeof ri->error);
    if (strcmp(ri->name, "x") != 0)
        die("the rule's name is not its file name");
    if (!ri->ok) {
        if (!ri->error[0])
            die("a broken rule without an error message");
        return;
    }
    char *src = NULL;
    if (ar_engine_rule_source(e, 0, &src, err, sizeof err) == AR_OK)
        free(src);
    for (size_t f = 0; f < NFIXTURES; f++) {
        ar_verdict *v = NULL;
        ar_study *st = NULL;
        size_t nv = 0;
        if (ar_engine_set_study_fixture(e, g_fixture[f], g_fixture_len[f], &st, err, sizeof err))
            die("a fixture did not load");
        if (ar_engine_evaluate(e, st, NULL, 1, &v, &nv, err, sizeof err) != AR_OK) {
            ar_study_free(st);
            continue;
        }
        for (size_t i = 0; i < nv; i++) {
            check_string("verdict reason", v[i].reason, sizeof v[i].reason);
            if (!v[i].matched || v[i].error)
                continue;
            ar_plan plan = {0};
            const char *series = v[i].series_id[0] ? v[i].series_id : NULL;
            if (ar_engine_plan(e, st, v[i].rule, series, &plan, err, sizeof err) == AR_OK) {
                check_rel("plan folder", plan.folder);
                if (strncmp(plan.folder, "x/", 2) != 0)
                    die("the plan folder is not below the rule's folder");
                for (size_t k = 0; k < plan.n; k++)
                    check_rel("plan file", plan.files[k].rel_path);
            }
            ar_plan_free(&plan);
        }
        free(v);
        ar_study_free(st);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[2048];
    ar_engine *e = NULL;
    ar_engine_opts o = {
        .instruction_budget = 200000,
        .timeout_ms = 200,
        .memory_mb = 32,
        .lua_dir = NULL,
    };
    const char *files[1] = {g_rule};

    write_rule(data, size);
    if (ar_engine_new(&o, &e, err, sizeof err) != AR_OK) {
        fprintf(stderr, "fuzz_compile: ar_engine_new: %s\n", err);
        abort();
    }
    ar_engine_set_print(e, quiet_print, NULL);
    if (ar_engine_load_rule_files(e, files, 1, err, sizeof err) != AR_OK) {
        fprintf(stderr, "fuzz_compile: ar_engine_load_rule_files: %s\n", err);
        abort();
    }
    if (ar_engine_rule_count(e) != 1)
        die("one rule file did not give one rule");
    exercise(e);
    ar_engine_free(e);
    return 0;
}
