/* cmd_snapshot.c - `autorthanc snapshot STUDY`: print what the rule engine
 * sees of a study as a fixture for `test --fixture` and `repl --fixture`:
 * {"study": /studies/{id}, "series": /studies/{id}/series, "instances":
 * /studies/{id}/instances}, Orthanc's own answers put side by side (no JSON
 * is parsed or rewritten here).  Without --instances the instance list is
 * empty (rules reading Level Instance tags, and file counts, need it). */
#include <stdio.h>
#include <string.h>

#include "../core/err.h"
#include "app.h"
#include "opts.h"
#include "toolkit.h"

static const char snapshot_usage[] =
    "usage: autorthanc snapshot [--config FILE] STUDY [--instances] > study.json\n"
    "\n"
    "Print the study (an Orthanc id or a StudyInstanceUID) as a fixture for\n"
    "`autorthanc test --fixture` and `autorthanc repl --fixture`: patient, study\n"
    "and series tags as Orthanc answers them; --instances adds every instance\n"
    "(tags, file sizes), needed by rules on instance tags and for file counts.\n";

int ar_cmd_snapshot(int argc, char **argv)
{
    ar_opts o = {.flags = {"--instances"}};
    ar_app a;
    ar_study_answers ans;
    char err[1024] = "";
    int code = ar_opts_parse(&o, argc, argv, snapshot_usage);

    if (code || o.help)
        return code;
    if (o.npos != 1) {
        fprintf(stderr, "autorthanc snapshot: give one STUDY\n%s", snapshot_usage);
        return AR_EXIT_USAGE;
    }
    memset(&a, 0, sizeof a);
    memset(&ans, 0, sizeof ans);
    if ((code = ar_app_config(&a, o.config)) || (code = ar_app_open_http(&a)))
        goto out;
    if (ar_tool_fetch_study(&a, o.pos[0], &ans, err, sizeof err)) {
        fprintf(stderr, "autorthanc snapshot: %s\n", err);
        code = AR_EXIT_FAIL;
        goto out;
    }
    fputs("{\"study\": ", stdout);
    fwrite(ans.study.data, 1, ans.study.len, stdout);
    fputs(",\n\"series\": ", stdout);
    fwrite(ans.series.data, 1, ans.series.len, stdout);
    fputs(",\n\"instances\": ", stdout);
    if (ar_opts_has(&o, "--instances"))
        fwrite(ans.instances.data, 1, ans.instances.len, stdout);
    else
        fputs("[]", stdout);
    fputs("}\n", stdout);
    code = fflush(stdout) == 0 ? AR_EXIT_OK : AR_EXIT_FAIL;
out:
    ar_study_answers_free(&ans);
    ar_app_close(&a);
    return code;
}
