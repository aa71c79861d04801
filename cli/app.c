/* app.c - see app.h */
#include "app.h"

#include <stdio.h>
#include <string.h>

#include "../core/dirsig.h"
#include "../core/err.h"
#include "../core/log.h"
#include "../core/orthanc.h"
#include "../core/statelock.h"

static const char *const rule_suffixes[] = {".json", ".lua", NULL};

int ar_app_config(ar_app *a, const char *config_path)
{
    char err[1024] = "";
    if (ar_config_load(&a->cfg, config_path, err, sizeof err)) {
        fprintf(stderr, "autorthanc: configuration error: %s\n", err);
        return AR_EXIT_USAGE;
    }
    ar_log_setup(a->cfg.log_level, a->cfg.log_json);
    return AR_EXIT_OK;
}

ar_http_opts ar_app_http_opts(const ar_app *a)
{
    return (ar_http_opts){
        .base_url = a->cfg.orthanc_url,
        .username = a->cfg.orthanc_username,
        .password = a->cfg.orthanc_password,
        .timeout_s = a->cfg.http_timeout,
        .connect_timeout_s = 10,
        .low_speed_limit = a->cfg.low_speed_limit,
        .low_speed_time = a->cfg.low_speed_time,
    };
}

int ar_app_open_http(ar_app *a)
{
    char err[1024] = "";
    ar_http_opts o = ar_app_http_opts(a);
    if (ar_http_new(&o, &a->http, err, sizeof err)) {
        ar_log(AR_LOG_ERROR, "http.init", NULL, "%s", err);
        return AR_EXIT_USAGE;
    }
    return AR_EXIT_OK;
}

int ar_app_open_state(ar_app *a)
{
    char err[1024] = "";
    if (ar_state_open(a->cfg.state_dir, &a->state, err, sizeof err)) {
        ar_log(AR_LOG_ERROR, "state.open", NULL, "%s", err);
        return AR_EXIT_USAGE;
    }
    return AR_EXIT_OK;
}

int ar_app_open_existing_state(ar_app *a)
{
    char err[1024] = "";
    int rc = ar_state_open_existing(a->cfg.state_dir, &a->state, err, sizeof err);
    if (rc) {
        fprintf(stderr, "autorthanc: %s\n", err);
        return AR_EXIT_USAGE;
    }
    return AR_EXIT_OK;
}

int ar_app_lock_state(ar_app *a)
{
    char err[1024] = "";
    int fd = -1;
    if (ar_statelock_take(a->cfg.state_dir, &fd, err, sizeof err)) {
        ar_log(AR_LOG_ERROR, "state.locked", NULL, "%s", err);
        return AR_EXIT_USAGE;
    }
    a->lock_fd = fd;
    return AR_EXIT_OK;
}

int ar_app_open_engine(ar_app *a)
{
    char err[1024] = "";
    ar_engine_opts o = {
        .instruction_budget = a->cfg.rule_instruction_budget,
        .timeout_ms = a->cfg.rule_timeout_ms,
        .memory_mb = a->cfg.rule_memory_mb,
    };
    if (ar_engine_new(&o, &a->engine, err, sizeof err)) {
        ar_log(AR_LOG_ERROR, "engine.init", NULL, "%s", err);
        return AR_EXIT_FAIL;
    }
    return AR_EXIT_OK;
}

int ar_app_load_rules(ar_app *a)
{
    char err[1024] = "";
    a->rules_sig = ar_dirsig(a->cfg.rules_dir, rule_suffixes);
    if (ar_engine_load_rules_dir(a->engine, a->cfg.rules_dir, err, sizeof err)) {
        ar_log(AR_LOG_ERROR, "rules.load", NULL, "%s", err);
        return AR_EXIT_USAGE; /* the rules folder itself: a configuration error */
    }
    a->rules_gen++; /* the workers load the same folder again */
    size_t n = ar_engine_rule_count(a->engine), good = 0;
    for (size_t i = 0; i < n; i++) {
        const ar_rule_info *r = ar_engine_rule(a->engine, i);
        ar_log_fields f = {.rule = r->name, .path = r->file, .bytes = -1, .seconds = -1};
        if (!r->ok)
            ar_log(AR_LOG_ERROR, "rule.broken", &f, "%s", r->error);
        else {
            good++;
            ar_log(AR_LOG_DEBUG, "rule.loaded", &f, "%s on %s%s%s%s", r->action, r->check_on,
                   r->destination[0] ? " to " : "", r->destination,
                   r->active ? "" : " (inactive)");
        }
    }
    ar_log(AR_LOG_INFO, "rules.loaded", NULL, "%zu rule(s) from %s, %zu broken", good,
           a->cfg.rules_dir, n - good);
    return AR_EXIT_OK;
}

void ar_app_maybe_reload_rules(ar_app *a, int force)
{
    if (force || ar_dirsig(a->cfg.rules_dir, rule_suffixes) != a->rules_sig)
        ar_app_load_rules(a);
}

int ar_app_load_study(ar_app *a, const char *study_id, ar_study **out, char *err,
                      size_t errlen)
{
    ar_study_answers ans;
    int rc;
    *out = NULL;
    if ((rc = ar_orthanc_fetch_study(a->http, study_id, &ans, err, errlen)))
        return rc;
    rc = ar_engine_set_study(a->engine, ans.study.data, ans.study.len, ans.series.data,
                             ans.series.len, ans.instances.data, ans.instances.len, out, err,
                             errlen);
    ar_study_answers_free(&ans);
    return rc;
}

long ar_app_find_rule(ar_app *a, const char *name)
{
    size_t n = ar_engine_rule_count(a->engine);
    for (size_t i = 0; i < n; i++) {
        const ar_rule_info *r = ar_engine_rule(a->engine, i);
        if (r->ok && strcmp(r->name, name) == 0)
            return (long)i;
    }
    return -1;
}

int ar_app_reload_config(ar_app *a)
{
    char err[1024] = "";
    ar_config next;
    if (ar_config_load(&next, a->cfg.config_file[0] ? a->cfg.config_file : NULL, err,
                       sizeof err)) {
        ar_log(AR_LOG_ERROR, "reload.config", NULL,
               "configuration not reloaded, keeping the running one: %s", err);
        return AR_EXIT_USAGE;
    }
    if (strcmp(next.state_dir, a->cfg.state_dir) != 0) {
        ar_log(AR_LOG_WARN, "reload.config", NULL,
               "state_dir changed to %s: that takes a restart; still using %s", next.state_dir,
               a->cfg.state_dir);
        snprintf(next.state_dir, sizeof next.state_dir, "%s", a->cfg.state_dir);
    }
    int http_changed = strcmp(next.orthanc_url, a->cfg.orthanc_url) != 0 ||
                       strcmp(next.orthanc_username, a->cfg.orthanc_username) != 0 ||
                       strcmp(next.orthanc_password, a->cfg.orthanc_password) != 0 ||
                       next.http_timeout != a->cfg.http_timeout;
    ar_http *old = a->http;
    ar_config prev = a->cfg;
    a->cfg = next;
    if (http_changed) {
        a->http = NULL;
        if (ar_app_open_http(a) != AR_EXIT_OK) {
            a->cfg = prev;
            a->http = old;
            return AR_EXIT_USAGE;
        }
        ar_http_free(old);
    }
    ar_log_setup(a->cfg.log_level, a->cfg.log_json);
    ar_log(AR_LOG_INFO, "reload.config", NULL, "configuration reloaded%s",
           http_changed ? " (new Orthanc connection settings)" : "");
    return AR_EXIT_OK;
}

void ar_app_close(ar_app *a)
{
    if (a->engine)
        ar_engine_free(a->engine);
    if (a->state)
        ar_state_close(a->state);
    if (a->http)
        ar_http_free(a->http);
    if (a->lock_fd > 0)
        ar_statelock_release(a->lock_fd);
    a->lock_fd = 0;
    a->engine = NULL;
    a->state = NULL;
    a->http = NULL;
}
