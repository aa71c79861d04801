/* cmd_test.c - `autorthanc test`: a dry run of one rule on studies or
 * fixtures (verdict, reason, target folder), or a folder of rule cases.
 * Exit 0 when every verdict is a match (with --expect-no-match: none is),
 * 1 otherwise, 2 for usage, configuration or input errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bindings/cases.h"
#include "../core/err.h"
#include "../core/snapshot.h"
#include "app.h"
#include "toolkit.h"

static const char test_usage[] =
    "usage: autorthanc test [--config FILE] RULE (STUDY | --fixture FILE)... [--expect-no-match]\n"
    "       autorthanc test --cases DIR [FILTER]\n"
    "\n"
    "Dry run: decide RULE (a rule of the rules folder, or a rule file) on each study\n"
    "(an Orthanc id or a StudyInstanceUID) or fixture (made by `autorthanc snapshot`)\n"
    "and print the verdict, the reason and the folder it would export to (noting a\n"
    "folder already owned by another study).  Nothing is exported or recorded.\n"
    "Exit 0 when every verdict is a match (--expect-no-match: when none is), 1\n"
    "otherwise, 2 for usage or input errors.\n"
    "  --cases DIR   run a folder of rule cases (the format of tests/cases) instead;\n"
    "                FILTER keeps the cases whose name contains it.\n";

typedef struct item {
    int fixture;
    const char *ref;
} item;

static void case_report(void *ud, const char *name, int ok, const char *msg)
{
    (void)ud;
    if (ok)
        printf("ok - %s\n", name);
    else
        printf("not ok - %s: %s\n", name, msg);
}

static int run_cases(const char *dir, const char *filter)
{
    char err[2048] = "";
    int passed = 0, failed = 0;
    if (ar_cases_run_dir(dir, filter, case_report, NULL, &passed, &failed, err, sizeof err)) {
        fprintf(stderr, "autorthanc test: %s\n", err);
        return AR_EXIT_USAGE;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? AR_EXIT_FAIL : AR_EXIT_OK;
}

/* A tag of the snapshot as text (at most 96 bytes), "" when absent. */
static void tag(const ar_snapshot *s, ar_snap_tags tags, const char *name, char *out,
                size_t outlen)
{
    size_t len = 0;
    const char *v = ar_snapshot_tag(s, tags, name, &len);
    snprintf(out, outlen, "%.*s", v ? (int)(len > 96 ? 96 : len) : 0, v ? v : "");
}

/* "PID NAME DATE \"DESCRIPTION\"" of a study. */
static void study_label(const ar_snapshot *s, char *out, size_t outlen)
{
    char pid[100], name[100], date[100], desc[100];
    tag(s, s->patient, "PatientID", pid, sizeof pid);
    tag(s, s->patient, "PatientName", name, sizeof name);
    tag(s, s->tags, "StudyDate", date, sizeof date);
    tag(s, s->tags, "StudyDescription", desc, sizeof desc);
    snprintf(out, outlen, "%s %s %s \"%s\"", pid[0] ? pid : "-", name[0] ? name : "-",
             date[0] ? date : "-", desc);
}

/* "3 MR \"DWI\"" of series i. */
static void series_label(const ar_snapshot *s, size_t i, char *out, size_t outlen)
{
    char num[100], mod[100], desc[100];
    tag(s, s->series[i].tags, "SeriesNumber", num, sizeof num);
    tag(s, s->series[i].tags, "Modality", mod, sizeof mod);
    tag(s, s->series[i].tags, "SeriesDescription", desc, sizeof desc);
    snprintf(out, outlen, "%s %s \"%s\"", num[0] ? num : "-", mod[0] ? mod : "-", desc);
}

static void print_target(ar_app *a, const ar_study *st, size_t rule, const char *series,
                         const char *indent, int matched)
{
    ar_target t;
    char err[1024] = "", hb[32];
    if (ar_tool_target(a, st, rule, series, &t, err, sizeof err)) {
        printf("%spath: (cannot plan: %s)\n", indent, err);
        return;
    }
    if (strncmp(t.folder, "modality ", 9) == 0) {
        printf("%s%s: %s\n", indent, matched ? "forward to" : "would forward to", t.folder);
        return;
    }
    if (t.files)
        printf("%s%s: %s (%zu files, %s)\n", indent, matched ? "path" : "path if it matched",
               t.folder, t.files, ar_tool_human_bytes(t.bytes, hb, sizeof hb));
    else
        printf("%s%s: %s (no instances listed)\n", indent, matched ? "path" : "path if it matched",
               t.folder);
    if (t.collision)
        printf("%scollision: %s is already owned by %s in the state database; this study "
               "would get %s\n",
               indent, t.folder, t.holder[0] ? t.holder : "another study", t.actual);
    else if (strcmp(t.actual, t.folder) != 0)
        printf("%s(already exported by this study as %s)\n", indent, t.actual);
}

/* One study: returns 1 matched, 0 not matched, -1 error. */
static int decide(ar_app *a, const ar_study *st, size_t rule, const char *label)
{
    const ar_rule_info *r = ar_engine_rule(a->engine, rule);
    char err[1024] = "";
    ar_verdict v;

    if (strcmp(r->check_on, "series") != 0) {
        if (ar_engine_evaluate_one(a->engine, st, rule, NULL, &v, err, sizeof err)) {
            printf("%s: error: %s\n", label, err);
            return -1;
        }
        if (v.error) {
            printf("%s: error\n  %s\n", label, v.reason);
            return -1;
        }
        printf("%s: %s\n", label, v.matched ? "match" : "no match");
        if (v.reason[0])
            printf("  reason: %s\n", v.reason);
        print_target(a, st, rule, NULL, "  ", v.matched);
        return v.matched;
    }
    size_t n = ar_study_series_count(st), hits = 0, errors = 0;
    ar_verdict *vs = calloc(n ? n : 1, sizeof *vs);
    if (!vs) {
        printf("%s: error: out of memory\n", label);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (ar_engine_evaluate_one(a->engine, st, rule, ar_study_series_id(st, i), &vs[i], err,
                                   sizeof err)) {
            vs[i].error = 1;
            snprintf(vs[i].reason, sizeof vs[i].reason, "%s", err);
        }
        hits += vs[i].matched && !vs[i].error;
        errors += vs[i].error != 0;
    }
    printf("%s: %s (%zu of %zu series)\n", label, errors ? "error" : hits ? "match" : "no match",
           hits, n);
    for (size_t i = 0; i < n; i++) {
        char sl[512];
        const char *sid = ar_study_series_id(st, i);
        series_label(ar_study_snapshot(st), i, sl, sizeof sl);
        printf("  series %s (%s): %s\n", sl, sid,
               vs[i].error ? "error" : vs[i].matched ? "match" : "no match");
        if (vs[i].reason[0])
            printf("    %s: %s\n", vs[i].error ? "error" : "reason", vs[i].reason);
        if (!vs[i].error)
            print_target(a, st, rule, sid, "    ", vs[i].matched);
    }
    free(vs);
    return errors ? -1 : hits > 0;
}

int ar_cmd_test(int argc, char **argv)
{
    const char *config = NULL, *cases = NULL, *rule_arg = NULL, *filter = NULL;
    int expect_none = 0, need_http = 0, code = AR_EXIT_USAGE;
    item *items = calloc((size_t)argc, sizeof *items);
    size_t nitems = 0, *idx = NULL, nidx = 0;
    char err[2048] = "";
    ar_app a;

    memset(&a, 0, sizeof a);
    if (!items)
        return AR_EXIT_FAIL;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            fputs(test_usage, stdout);
            code = AR_EXIT_OK;
            goto out;
        } else if ((!strcmp(s, "--config") || !strcmp(s, "-c") || !strcmp(s, "--fixture") ||
                    !strcmp(s, "--cases")) && i + 1 >= argc) {
            fprintf(stderr, "autorthanc test: %s needs a value\n%s", s, test_usage);
            goto out;
        } else if (!strcmp(s, "--config") || !strcmp(s, "-c")) {
            config = argv[++i];
        } else if (!strncmp(s, "--config=", 9)) {
            config = s + 9;
        } else if (!strcmp(s, "--cases")) {
            cases = argv[++i];
        } else if (!strcmp(s, "--fixture")) {
            items[nitems].fixture = 1;
            items[nitems++].ref = argv[++i];
        } else if (!strncmp(s, "--fixture=", 10)) {
            items[nitems].fixture = 1;
            items[nitems++].ref = s + 10;
        } else if (!strcmp(s, "--expect-no-match")) {
            expect_none = 1;
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "autorthanc test: unknown option '%s'\n%s", s, test_usage);
            goto out;
        } else if (cases && !filter) {
            filter = s;
        } else if (!rule_arg && !cases) {
            rule_arg = s;
        } else {
            items[nitems].fixture = 0;
            items[nitems++].ref = s;
            need_http = 1;
        }
    }
    if (cases) {
        if (rule_arg || nitems) {
            fprintf(stderr, "autorthanc test: --cases takes no rule or study\n%s", test_usage);
            goto out;
        }
        code = run_cases(cases, filter);
        goto out;
    }
    if (!rule_arg || nitems == 0) {
        fprintf(stderr, "autorthanc test: give a RULE and at least one STUDY or --fixture FILE\n%s",
                test_usage);
        goto out;
    }
    if ((code = ar_app_config(&a, config)))
        goto out;
    if ((code = ar_app_open_engine(&a)))
        goto out;
    if (need_http && (code = ar_app_open_http(&a)))
        goto out;
    code = AR_EXIT_USAGE;
    if (ar_tool_load_rules(&a, &rule_arg, 1, &idx, &nidx, err, sizeof err) || nidx != 1) {
        fprintf(stderr, "autorthanc test: %s\n", err[0] ? err : "no such rule");
        goto out;
    }
    if (ar_tool_open_state_if_any(&a, err, sizeof err)) {
        fprintf(stderr, "autorthanc test: %s\n", err);
        goto out;
    }
    const ar_rule_info *r = ar_engine_rule(a.engine, idx[0]);
    printf("rule %s (%s, %s %s%s%s)%s\n", r->name, r->file, r->check_on, r->action,
           r->destination[0] ? " to " : "", r->destination,
           r->active ? "" : " - inactive: the daemon does not run it");
    int all_match = 1, none_match = 1, input_error = 0;
    for (size_t i = 0; i < nitems; i++) {
        char label[1024], dl[512];
        ar_study_answers ans;
        ar_study *st = NULL;
        int rc, verdict;
        memset(&ans, 0, sizeof ans);
        if (items[i].fixture) {
            rc = ar_engine_set_study_fixture_file(a.engine, items[i].ref, &st, err, sizeof err);
        } else {
            rc = ar_tool_fetch_study(&a, items[i].ref, &ans, err, sizeof err);
            if (!rc)
                rc = ar_engine_set_study(a.engine, ans.study.data, ans.study.len, ans.series.data,
                                         ans.series.len, ans.instances.data, ans.instances.len,
                                         &st, err, sizeof err);
            ar_study_answers_free(&ans); /* the snapshot holds what is needed */
        }
        if (rc) {
            printf("%s: cannot read the study: %s\n", items[i].ref, err);
            input_error = 1;
            continue;
        }
        study_label(ar_study_snapshot(st), dl, sizeof dl);
        snprintf(label, sizeof label, "%s %s (%s)", items[i].fixture ? "fixture" : "study",
                 items[i].ref, dl);
        verdict = decide(&a, st, idx[0], label);
        ar_study_free(st);
        all_match &= verdict == 1;
        none_match &= verdict == 0;
    }
    if (input_error)
        code = AR_EXIT_USAGE;
    else
        code = (expect_none ? none_match : all_match) ? AR_EXIT_OK : AR_EXIT_FAIL;
out:
    free(idx);
    free(items);
    ar_app_close(&a);
    return code;
}
