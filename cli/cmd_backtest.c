/* cmd_backtest.c - `autorthanc backtest`: decide the rules on every study
 * already in Orthanc, exporting nothing, and say per rule how many studies
 * (and series, for series rules) it would take and how many bytes.  The
 * decisions are the daemon's (active rules, study rules once per study,
 * series rules once per series), so the counts are what `run --once` from
 * an empty state would export.  A progress bar on stderr when it is a
 * terminal. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/orthanc_json.h"
#include "../core/err.h"
#include "app.h"
#include "toolkit.h"

static const char backtest_usage[] =
    "usage: autorthanc backtest [--config FILE] [RULE...] [--since DATE] [--list]\n"
    "\n"
    "Decide the rules (default: every rule of the rules folder) on every study in\n"
    "Orthanc, or those with a StudyDate on or after DATE (YYYYMMDD or YYYY-MM-DD),\n"
    "without exporting anything; print per rule the studies (and series) it would\n"
    "take and their size.  --list also prints each study and its target folder.\n";

typedef struct hit {
    char *study, *series, *folder;
    long long bytes;
} hit;

typedef struct tally {
    size_t studies, series, errors;
    long long bytes;
    int unknown_size;
    hit *hits;
    size_t nhits, cap;
    char last_study[128];
    char first_error[2400];
} tally;

static int add_hit(tally *t, const char *study, const char *series, const char *folder,
                   long long bytes)
{
    if (t->nhits == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        hit *nh = realloc(t->hits, cap * sizeof *nh);
        if (!nh)
            return -1;
        t->hits = nh;
        t->cap = cap;
    }
    hit *h = &t->hits[t->nhits];
    h->study = strdup(study);
    h->series = strdup(series ? series : "");
    h->folder = strdup(folder);
    h->bytes = bytes;
    if (!h->study || !h->series || !h->folder) {
        free(h->study);
        free(h->series);
        free(h->folder);
        return -1;
    }
    t->nhits++;
    return 0;
}

/* "2024-01-31" or "20240131" -> "20240131"; 0 when not a date. */
static int parse_date(const char *s, char out[9])
{
    size_t k = 0;
    for (; *s; s++) {
        if (*s == '-')
            continue;
        if (!isdigit((unsigned char)*s) || k >= 8)
            return 0;
        out[k++] = *s;
    }
    out[k] = '\0';
    return k == 8;
}

int ar_cmd_backtest(int argc, char **argv)
{
    const char *config = NULL, *since = NULL;
    const char **names = calloc((size_t)argc, sizeof *names);
    size_t nnames = 0, *idx = NULL, nidx = 0, nstudies = 0, skipped = 0;
    int list = 0, code = AR_EXIT_USAGE;
    char err[2048] = "", date[9] = "";
    char **studies = NULL;
    tally *tl = NULL;
    ar_buf b = {0};
    ar_app a;
    ar_progress prog;

    memset(&a, 0, sizeof a);
    if (!names)
        return AR_EXIT_FAIL;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            fputs(backtest_usage, stdout);
            code = AR_EXIT_OK;
            goto out;
        } else if ((!strcmp(s, "--config") || !strcmp(s, "-c") || !strcmp(s, "--since")) &&
                   i + 1 >= argc) {
            fprintf(stderr, "autorthanc backtest: %s needs a value\n%s", s, backtest_usage);
            goto out;
        } else if (!strcmp(s, "--config") || !strcmp(s, "-c")) {
            config = argv[++i];
        } else if (!strncmp(s, "--config=", 9)) {
            config = s + 9;
        } else if (!strcmp(s, "--since")) {
            since = argv[++i];
        } else if (!strncmp(s, "--since=", 8)) {
            since = s + 8;
        } else if (!strcmp(s, "--list")) {
            list = 1;
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "autorthanc backtest: unknown option '%s'\n%s", s, backtest_usage);
            goto out;
        } else {
            names[nnames++] = s;
        }
    }
    if (since && !parse_date(since, date)) {
        fprintf(stderr, "autorthanc backtest: --since wants a date YYYYMMDD or YYYY-MM-DD, got '%s'\n",
                since);
        goto out;
    }
    if ((code = ar_app_config(&a, config)) || (code = ar_app_open_engine(&a)) ||
        (code = ar_app_open_http(&a)))
        goto out;
    code = AR_EXIT_USAGE;
    if (ar_tool_load_rules(&a, names, nnames, &idx, &nidx, err, sizeof err)) {
        fprintf(stderr, "autorthanc backtest: %s\n", err);
        goto out;
    }
    if (ar_tool_open_state_if_any(&a, err, sizeof err)) {
        fprintf(stderr, "autorthanc backtest: %s\n", err);
        goto out;
    }
    code = AR_EXIT_FAIL;
    int rc;
    if (since) {
        char body[160];
        snprintf(body, sizeof body,
                 "{\"Level\":\"Study\",\"Query\":{\"StudyDate\":\"%s-\"},\"Expand\":false}", date);
        rc = ar_http_post(a.http, "/tools/find", body, strlen(body), NULL, &b, err, sizeof err);
    } else {
        rc = ar_http_get(a.http, "/studies", &b, err, sizeof err);
    }
    if (rc || ar_ojson_list(b.data, b.len, "", &studies, &nstudies, err, sizeof err)) {
        fprintf(stderr, "autorthanc backtest: cannot list the studies: %s\n", err);
        goto out;
    }
    tl = calloc(ar_engine_rule_count(a.engine) + 1, sizeof *tl);
    if (!tl)
        goto out;

    ar_progress_start(&prog, "backtest");
    for (size_t s = 0; s < nstudies; s++) {
        ar_verdict *v = NULL;
        ar_study *st = NULL;
        size_t nv = 0;
        ar_progress_draw(&prog, s, nstudies, -1, -1, s == 0);
        rc = ar_app_load_study(&a, studies[s], &st, err, sizeof err);
        if (rc == AR_ENOTFOUND) { /* deleted meanwhile */
            skipped++;
            continue;
        }
        if (rc) {
            ar_progress_end(&prog);
            fprintf(stderr, "autorthanc backtest: study %s: %s\n", studies[s], err);
            goto out;
        }
        if (ar_engine_evaluate(a.engine, st, NULL, 1, &v, &nv, err, sizeof err)) {
            ar_study_free(st);
            ar_progress_end(&prog);
            fprintf(stderr, "autorthanc backtest: study %s: %s\n", studies[s], err);
            goto out;
        }
        for (size_t i = 0; i < nv; i++) {
            int chosen = 0;
            for (size_t k = 0; k < nidx; k++)
                chosen |= idx[k] == v[i].rule;
            if (!chosen)
                continue;
            tally *t = &tl[v[i].rule];
            if (v[i].error) {
                if (!t->errors++)
                    snprintf(t->first_error, sizeof t->first_error, "%s: %s", studies[s],
                             v[i].reason);
                continue;
            }
            if (!v[i].matched)
                continue;
            const char *series = v[i].series_id[0] ? v[i].series_id : NULL;
            ar_target tg;
            if (ar_tool_target(&a, st, v[i].rule, series, &tg, err, sizeof err)) {
                if (!t->errors++)
                    snprintf(t->first_error, sizeof t->first_error, "%s: %s", studies[s], err);
                continue;
            }
            if (strcmp(t->last_study, studies[s]) != 0) {
                t->studies++;
                snprintf(t->last_study, sizeof t->last_study, "%s", studies[s]);
            }
            if (series)
                t->series++;
            if (tg.bytes < 0)
                t->unknown_size = 1;
            else
                t->bytes += tg.bytes;
            if (list && add_hit(t, studies[s], series, tg.collision ? tg.actual : tg.folder,
                                tg.bytes)) {
                ar_progress_end(&prog);
                fprintf(stderr, "autorthanc backtest: out of memory\n");
                free(v);
                ar_study_free(st);
                goto out;
            }
        }
        free(v);
        ar_study_free(st);
    }
    ar_progress_draw(&prog, nstudies, nstudies, -1, -1, 1);
    ar_progress_end(&prog);

    printf("backtest of %zu rule(s) over %zu stud%s in Orthanc%s%s%s\n", nidx, nstudies - skipped,
           nstudies - skipped == 1 ? "y" : "ies", since ? " with StudyDate on or after " : "",
           since ? date : "", skipped ? " (some were deleted meanwhile)" : "");
    for (size_t k = 0; k < nidx; k++) {
        const ar_rule_info *r = ar_engine_rule(a.engine, idx[k]);
        tally *t = &tl[idx[k]];
        char hb[32];
        if (!r->active) {
            printf("%s: inactive (the daemon does not run it): 0 studies\n", r->name);
            continue;
        }
        if (strcmp(r->check_on, "series") == 0)
            printf("%s: %zu stud%s, %zu series, ", r->name, t->studies,
                   t->studies == 1 ? "y" : "ies", t->series);
        else
            printf("%s: %zu stud%s, ", r->name, t->studies, t->studies == 1 ? "y" : "ies");
        if (strcmp(r->action, "forward") == 0)
            printf("forwarded to %s\n", r->destination);
        else
            printf("%s%lld bytes (%s)\n", t->unknown_size ? "at least " : "", t->bytes,
                   ar_tool_human_bytes(t->bytes, hb, sizeof hb));
        if (t->errors)
            printf("  %zu error(s), first: %s\n", t->errors, t->first_error);
        for (size_t h = 0; h < t->nhits; h++)
            printf("  %s%s%s  %s  %s\n", t->hits[h].study, t->hits[h].series[0] ? " series " : "",
                   t->hits[h].series, t->hits[h].folder,
                   ar_tool_human_bytes(t->hits[h].bytes, hb, sizeof hb));
    }
    code = AR_EXIT_OK;
out:
    if (tl) {
        for (size_t i = 0; i <= ar_engine_rule_count(a.engine); i++) {
            for (size_t h = 0; h < tl[i].nhits; h++) {
                free(tl[i].hits[h].study);
                free(tl[i].hits[h].series);
                free(tl[i].hits[h].folder);
            }
            free(tl[i].hits);
        }
        free(tl);
    }
    free(studies);
    ar_buf_free(&b);
    free(idx);
    free(names);
    ar_app_close(&a);
    return code;
}
