/* cmd_check.c - `autorthanc check`: load and compile rules, report each. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/orthanc.h"
#include "app.h"
#include "opts.h"

static const char check_usage[] =
    "usage: autorthanc check [--config FILE] [--emit-lua] [RULE_FILE...]\n"
    "\n"
    "Load and compile the rules (default: every rule in the rules folder) and print\n"
    "one line per rule: name, trigger, action, OK or the error.  Exit 1 if any rule\n"
    "is broken.  --emit-lua also prints the Lua each rule compiles to (a valid Lua\n"
    "rule you can start from).\n";

/* FORWARD destinations against the modalities Orthanc knows, when it
 * answers (offline, nothing is verified and that is said); returns how many
 * rules name a modality Orthanc does not have. */
static int check_destinations(ar_app *a, const char *lead)
{
    char known[4096], err[1024], list[4100];
    int bad = 0, any = 0;
    size_t n = ar_engine_rule_count(a->engine);
    for (size_t i = 0; i < n; i++)
        any |= ar_engine_rule(a->engine, i)->ok && ar_engine_rule(a->engine, i)->destination[0];
    if (!any)
        return 0;
    if (ar_app_open_http(a) != AR_EXIT_OK ||
        ar_orthanc_modalities(a->http, known, sizeof known, err, sizeof err) != AR_OK) {
        printf("%sFORWARD destinations not verified: %s\n", lead, a->http ? err : "no client");
        return 0;
    }
    snprintf(list, sizeof list, ", %s, ", known);
    for (size_t i = 0; i < n; i++) {
        const ar_rule_info *r = ar_engine_rule(a->engine, i);
        char needle[300];
        if (!r->ok || !r->destination[0])
            continue;
        snprintf(needle, sizeof needle, ", %s, ", r->destination);
        if (strstr(list, needle))
            continue;
        printf("%s%-24s BROKEN  modality '%s' is not configured in Orthanc at %s (known: %s)\n",
               lead, r->name, r->destination, a->cfg.orthanc_url, known);
        bad++;
    }
    return bad;
}

int ar_cmd_check(int argc, char **argv)
{
    ar_opts o = {.flags = {"--emit-lua"}};
    ar_app a;
    char err[1024] = "";
    int code = ar_opts_parse(&o, argc, argv, check_usage);
    if (code || o.help)
        return code;
    memset(&a, 0, sizeof a);
    if ((code = ar_app_config(&a, o.config)))
        return code;
    if ((code = ar_app_open_engine(&a)))
        goto out;
    int rc = o.npos ? ar_engine_load_rule_files(a.engine, o.pos, (size_t)o.npos, err, sizeof err)
                    : ar_engine_load_rules_dir(a.engine, a.cfg.rules_dir, err, sizeof err);
    if (rc) {
        fprintf(stderr, "autorthanc check: %s\n", err);
        code = AR_EXIT_FAIL;
        goto out;
    }
    size_t n = ar_engine_rule_count(a.engine);
    int broken = 0, emit = ar_opts_has(&o, "--emit-lua");
    for (size_t i = 0; i < n; i++) {
        const ar_rule_info *r = ar_engine_rule(a.engine, i);
        /* with --emit-lua the report lines are Lua comments, so a single
         * rule's output can be saved and loaded as a Lua rule as it is */
        const char *lead = emit ? "-- " : "";
        if (!r->ok) {
            broken++;
            printf("%s%-24s BROKEN  %s\n", lead, r->name, r->error);
            continue;
        }
        printf("%s%-24s %-6s %-8s%s%s%s  OK\n", lead, r->name, r->check_on, r->action,
               r->destination[0] ? " -> " : "", r->destination, r->active ? "" : " (inactive)");
        if (r->unconditional)
            printf("%s%-24s WARNING no conditions (\"Tags\": []): every %s matches and is %s; "
                   "is that meant?\n", lead, r->name, r->check_on,
                   strcmp(r->action, "forward") ? "exported" : "forwarded");
        if (emit) {
            char *src = NULL;
            if (ar_engine_rule_source(a.engine, i, &src, err, sizeof err) == 0) {
                printf("-- source of %s (%s)\n%s\n", r->name, r->file, src);
                free(src);
            } else {
                printf("-- %s: %s\n", r->name, err);
            }
        }
    }
    if (!o.npos) {
        /* files that look like rules but are not loaded: say so, and why */
        DIR *d = opendir(a.cfg.rules_dir);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            const char *why = ar_engine_ignored_file(de->d_name);
            if (why)
                printf("%s%-24s IGNORED %s\n", emit ? "-- " : "", de->d_name, why);
        }
        if (d)
            closedir(d);
    }
    if (n == 0)
        printf("no rules found in %s\n", o.npos ? "the given files" : a.cfg.rules_dir);
    broken += check_destinations(&a, emit ? "-- " : "");
    code = broken ? AR_EXIT_FAIL : AR_EXIT_OK;
out:
    ar_app_close(&a);
    return code;
}
