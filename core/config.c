/* config.c - see config.h.
 *
 * One table describes every key: its YAML name, its environment variable
 * (and the original autorthanc's alias), where it lives in ar_config, how it
 * is parsed and the range it must be in.  The YAML file is read with
 * libyaml's event parser: a flat mapping of scalar keys to scalar values;
 * anything else (lists, nested mappings, aliases, several documents, a key
 * given twice, an unknown key) is an error naming the file and line.
 *
 * Values are echoed in error messages to help the user, except the password
 * (never) and URLs (user:password@ is masked).  Empty environment variables
 * count as unset, so `VAR=` in a compose .env file leaves the file's value.
 * Relative paths are kept as given (relative to the working directory).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* strtod_l, newlocale */
#endif
#include "config.h"
#include "err.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

typedef enum {
    K_URL,      /* http(s)://..., trailing '/' stripped */
    K_USER,     /* free text, no ':' (HTTP basic auth) nor controls */
    K_SECRET,   /* free text, never echoed */
    K_PATH,     /* non-empty */
    K_TARGETS,  /* "NAME=N,NAME=N": per FORWARD target concurrency */
    K_DOUBLE,
    K_INT,
    K_LONG,
    K_LLONG,
    K_BOOL,
    K_START_AT,
    K_LOG_FORMAT,
    K_LOG_LEVEL
} key_kind;

typedef struct key_def {
    const char *name;
    const char *env;
    const char *alias;      /* original autorthanc's variable, or NULL */
    key_kind kind;
    size_t offset;
    size_t size;            /* of the char[] field, for strings */
    double min, max;        /* for numbers */
} key_def;

#define STR_FIELD(f) offsetof(ar_config, f), sizeof(((ar_config *)0)->f)
#define NUM_FIELD(f) offsetof(ar_config, f), 0

static const key_def keys[] = {
    { "orthanc_url", "AUTORTHANC_ORTHANC_URL", NULL, K_URL, STR_FIELD(orthanc_url), 0, 0 },
    { "orthanc_username", "AUTORTHANC_ORTHANC_USERNAME", NULL, K_USER, STR_FIELD(orthanc_username), 0, 0 },
    { "orthanc_password", "AUTORTHANC_ORTHANC_PASSWORD", NULL, K_SECRET, STR_FIELD(orthanc_password), 0, 0 },
    { "orthanc_password_file", "AUTORTHANC_ORTHANC_PASSWORD_FILE", NULL, K_PATH, STR_FIELD(orthanc_password_file), 0, 0 },
    { "rules_dir", "AUTORTHANC_RULES_DIR", "ORTHANC_AUTOMATION_JSON_SCRIPTS_PATH", K_PATH, STR_FIELD(rules_dir), 0, 0 },
    { "storage_dir", "AUTORTHANC_STORAGE_DIR", "ORTHANC_AUTOMATION_STORAGE_PATH", K_PATH, STR_FIELD(storage_dir), 0, 0 },
    { "state_dir", "AUTORTHANC_STATE_DIR", NULL, K_PATH, STR_FIELD(state_dir), 0, 0 },
    { "poll_interval", "AUTORTHANC_POLL_INTERVAL", NULL, K_DOUBLE, NUM_FIELD(poll_interval), 0.01, 86400 },
    { "start_at", "AUTORTHANC_START_AT", NULL, K_START_AT, NUM_FIELD(start_at_now), 0, 0 },
    { "output_uid", "AUTORTHANC_OUTPUT_UID", NULL, K_LONG, NUM_FIELD(output_uid), -1, 4294967294.0 },
    { "output_gid", "AUTORTHANC_OUTPUT_GID", NULL, K_LONG, NUM_FIELD(output_gid), -1, 4294967294.0 },
    { "max_connections", "AUTORTHANC_MAX_CONNECTIONS", NULL, K_INT, NUM_FIELD(max_connections), 1, 256 },
    { "max_parallel_exports", "AUTORTHANC_MAX_PARALLEL_EXPORTS", NULL, K_INT, NUM_FIELD(max_parallel_exports), 1, 64 },
    { "forward_concurrency", "AUTORTHANC_FORWARD_CONCURRENCY", NULL, K_INT, NUM_FIELD(forward_concurrency), 1, 64 },
    { "target_concurrency", "AUTORTHANC_TARGET_CONCURRENCY", NULL, K_TARGETS, STR_FIELD(target_concurrency), 0, 0 },
    { "forward_timeout", "AUTORTHANC_FORWARD_TIMEOUT", NULL, K_DOUBLE, NUM_FIELD(forward_timeout), 1, 30 * 86400 },
    { "low_speed_limit", "AUTORTHANC_LOW_SPEED_LIMIT", NULL, K_LONG, NUM_FIELD(low_speed_limit), 1, 1e9 },
    { "low_speed_time", "AUTORTHANC_LOW_SPEED_TIME", NULL, K_LONG, NUM_FIELD(low_speed_time), 1, 86400 },
    { "http_timeout", "AUTORTHANC_HTTP_TIMEOUT", NULL, K_LONG, NUM_FIELD(http_timeout), 0, 86400 },
    { "fsync", "AUTORTHANC_FSYNC", NULL, K_BOOL, NUM_FIELD(fsync), 0, 0 },
    { "verify_md5", "AUTORTHANC_VERIFY_MD5", NULL, K_BOOL, NUM_FIELD(verify_md5), 0, 0 },
    { "retry_initial", "AUTORTHANC_RETRY_INITIAL", NULL, K_DOUBLE, NUM_FIELD(retry_initial), 0.01, 86400 },
    { "retry_max", "AUTORTHANC_RETRY_MAX", NULL, K_DOUBLE, NUM_FIELD(retry_max), 0.01, 30 * 86400 },
    { "retry_attempts", "AUTORTHANC_RETRY_ATTEMPTS", NULL, K_INT, NUM_FIELD(retry_attempts), 1, 1000000 },
    { "stable_age", "AUTORTHANC_STABLE_AGE", NULL, K_DOUBLE, NUM_FIELD(stable_age), 0, 30 * 86400 },
    { "log_format", "AUTORTHANC_LOG_FORMAT", NULL, K_LOG_FORMAT, NUM_FIELD(log_json), 0, 0 },
    { "log_level", "AUTORTHANC_LOG_LEVEL", NULL, K_LOG_LEVEL, NUM_FIELD(log_level), 0, 0 },
    { "rule_instruction_budget", "AUTORTHANC_RULE_INSTRUCTION_BUDGET", NULL, K_LLONG,
      NUM_FIELD(rule_instruction_budget), 1000, 1e15 },
    { "rule_timeout_ms", "AUTORTHANC_RULE_TIMEOUT_MS", NULL, K_LONG, NUM_FIELD(rule_timeout_ms), 1, 3600000 },
    { "rule_memory_mb", "AUTORTHANC_RULE_MEMORY_MB", NULL, K_LONG, NUM_FIELD(rule_memory_mb), 1, 65536 },
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

void ar_config_defaults(ar_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->orthanc_url, sizeof c->orthanc_url, "%s", "http://localhost:8042");
    snprintf(c->rules_dir, sizeof c->rules_dir, "%s", "./rules");
    snprintf(c->storage_dir, sizeof c->storage_dir, "%s", "./storage");
    snprintf(c->state_dir, sizeof c->state_dir, "%s", "./state");
    c->poll_interval = 1;
    c->start_at_now = 0;
    c->output_uid = -1;
    c->output_gid = -1;
    c->max_connections = 4;
    c->max_parallel_exports = 2;
    c->forward_concurrency = 1;
    c->forward_timeout = 3600;
    c->low_speed_limit = 1000;
    c->low_speed_time = 60;
    c->http_timeout = 60;
    c->fsync = 1;
    c->verify_md5 = 0;
    c->retry_initial = 5;
    c->retry_max = 600;
    c->retry_attempts = 10;
    c->stable_age = 60;
    c->log_json = 0;
    c->log_level = 1;
    c->rule_instruction_budget = 10000000LL;
    c->rule_timeout_ms = 2000;
    c->rule_memory_mb = 64;
}

int ar_config_target_concurrency(const ar_config *c, const char *modality)
{
    size_t len = strlen(modality);
    for (const char *p = c->target_concurrency; *p;) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');
        if (!eq)
            break;
        if ((size_t)(eq - p) == len && strncmp(p, modality, len) == 0)
            return (int)strtol(eq + 1, NULL, 10);
        if (!end)
            break;
        p = end + 1;
    }
    return c->forward_concurrency;
}

static const key_def *find_key(const char *name)
{
    size_t i;
    for (i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* A printable, bounded copy of an untrusted string for messages. */
static const char *show(const char *s, char *buf, size_t buflen)
{
    size_t i, o = 0, max = buflen > 4 ? buflen - 4 : 0;
    for (i = 0; s[i] && o < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[o++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    if (s[i] && buflen >= 4) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    if (buflen)
        buf[o < buflen ? o : buflen - 1] = '\0';
    return buf;
}

/* Like show(), with any "user:password@" masked. */
static const char *show_url(const char *s, char *buf, size_t buflen)
{
    const char *at = strrchr(s, '@');
    const char *scheme = strstr(s, "://");
    char tmp[1200];
    if (!at) {
        return show(s, buf, buflen);
    }
    if (scheme && scheme < at)
        snprintf(tmp, sizeof tmp, "%.*s://***%.1000s", (int)(scheme - s) > 16 ? 16 : (int)(scheme - s), s, at);
    else
        snprintf(tmp, sizeof tmp, "***%.1000s", at);
    return show(tmp, buf, buflen);
}

/* Copy of s without leading/trailing ASCII white space. */
static void trimmed(const char *s, char *out, size_t outlen)
{
    size_t n;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* Decimal number, whole string, finite, independent of the locale. */
static int parse_double(const char *s, double *out)
{
    locale_t loc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    char *end = NULL;
    double v;
    const char *p;
    if (!loc)
        return -1;
    /* Only digits, sign, '.', exponent: no hex floats, inf, nan. */
    for (p = s; *p; p++)
        if (!isdigit((unsigned char)*p) && !strchr("+-.eE", *p)) {
            freelocale(loc);
            return -1;
        }
    errno = 0;
    v = strtod_l(s, &end, loc);
    freelocale(loc);
    if (!*s || *end || errno == ERANGE || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int parse_integer(const char *s, long long *out)
{
    char *end = NULL;
    long long v;
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (*end || errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = { "true", "yes", "1", "on" };
    static const char *const no[] = { "false", "no", "0", "off" };
    size_t i;
    for (i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* Validate a URL and store it without trailing '/'. */
static int set_url(char *field, size_t size, const char *v, const char *origin,
                   char *err, size_t errlen)
{
    char shown[200];
    size_t skip, n;
    const char *p;

    if (strncasecmp(v, "http://", 7) == 0)
        skip = 7;
    else if (strncasecmp(v, "https://", 8) == 0)
        skip = 8;
    else
        return ar_seterr(err, errlen, AR_ECONFIG,
                         "%s: invalid value for orthanc_url '%s': it must start with http:// or https://",
                         origin, show_url(v, shown, sizeof shown));
    for (p = v; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for orthanc_url '%s': it must not contain spaces or control characters",
                             origin, show_url(v, shown, sizeof shown));
    if (v[skip] == '\0' || v[skip] == '/' || v[skip] == '?' || v[skip] == '#')
        return ar_seterr(err, errlen, AR_ECONFIG,
                         "%s: invalid value for orthanc_url '%s': no host name",
                         origin, show_url(v, shown, sizeof shown));
    n = strlen(v);
    while (n > skip + 1 && v[n - 1] == '/')
        n--;
    if (n >= size)
        return ar_seterr(err, errlen, AR_ECONFIG,
                         "%s: invalid value for orthanc_url: longer than %zu bytes", origin, size - 1);
    memcpy(field, v, n);
    field[n] = '\0';
    return AR_OK;
}

static int set_key(ar_config *c, const key_def *k, const char *value, const char *origin,
                   char *err, size_t errlen)
{
    char *base = (char *)c + k->offset;
    char shown[120], t[128];
    double d;
    long long ll;
    int b;

    switch (k->kind) {
    case K_URL:
        return set_url(base, k->size, value, origin, err, errlen);
    case K_SECRET:
        /* Nothing about the value is ever echoed, not even its length. */
        if (strlen(value) >= k->size)
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s (longer than %zu bytes)",
                             origin, k->name, k->size - 1);
        memcpy(base, value, strlen(value) + 1);
        return AR_OK;
    case K_USER:
        if (strlen(value) >= k->size)
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s: longer than %zu bytes",
                             origin, k->name, k->size - 1);
        if (strchr(value, ':') || has_control(value))
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s '%s': it must not contain ':' or control characters",
                             origin, k->name, show(value, shown, sizeof shown));
        memcpy(base, value, strlen(value) + 1);
        return AR_OK;
    case K_TARGETS: {
        /* each item NAME=N, N from 1 to 64, NAME without '=', ',' or controls */
        const char *p = value;
        if (strlen(value) >= k->size)
            return ar_seterr(err, errlen, AR_ECONFIG, "%s: invalid value for %s: longer than %zu bytes",
                             origin, k->name, k->size - 1);
        while (*p) {
            const char *eq = strchr(p, '='), *end = strchr(p, ',');
            if (!end)
                end = p + strlen(p);
            char *num_end = NULL;
            long v = eq && eq < end ? strtol(eq + 1, &num_end, 10) : 0;
            int bad_name = !eq || eq == p || eq > end;
            for (const char *q = p; !bad_name && q < eq; q++)
                bad_name = (unsigned char)*q < 0x20 || *q == 0x7f;
            if (bad_name || num_end != end || v < 1 || v > 64)
                return ar_seterr(err, errlen, AR_ECONFIG,
                                 "%s: invalid value for %s '%s': expected MODALITY=N items "
                                 "separated by ',' (N from 1 to 64), e.g. PACS=4,ARCHIVE=2",
                                 origin, k->name, show(value, shown, sizeof shown));
            p = *end ? end + 1 : end;
        }
        memcpy(base, value, strlen(value) + 1);
        return AR_OK;
    }
    case K_PATH:
        if (!*value)
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s: it must not be empty", origin, k->name);
        if (strlen(value) >= k->size)
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s: longer than %zu bytes",
                             origin, k->name, k->size - 1);
        memcpy(base, value, strlen(value) + 1);
        return AR_OK;
    default:
        break;
    }

    /* Everything else is a short word or number: trim white space first. */
    if (strlen(value) >= sizeof t)
        return ar_seterr(err, errlen, AR_ECONFIG, "%s: invalid value for %s '%s': too long",
                         origin, k->name, show(value, shown, sizeof shown));
    trimmed(value, t, sizeof t);
    show(t, shown, sizeof shown);

    switch (k->kind) {
    case K_DOUBLE:
        if (parse_double(t, &d) || d < k->min || d > k->max)
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s '%s': expected a number from %g to %g",
                             origin, k->name, shown, k->min, k->max);
        *(double *)(void *)base = d;
        return AR_OK;
    case K_INT:
    case K_LONG:
    case K_LLONG:
        if (parse_integer(t, &ll) || (double)ll < k->min || (double)ll > k->max)
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s '%s': expected a whole number from %.0f to %.0f",
                             origin, k->name, shown, k->min, k->max);
        if (k->kind == K_INT)
            *(int *)(void *)base = (int)ll;
        else if (k->kind == K_LONG)
            *(long *)(void *)base = (long)ll;
        else
            *(long long *)(void *)base = ll;
        return AR_OK;
    case K_BOOL:
        if (parse_bool(t, &b))
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s '%s': expected true or false",
                             origin, k->name, shown);
        *(int *)(void *)base = b;
        return AR_OK;
    case K_START_AT:
        if (strcasecmp(t, "beginning") == 0)
            c->start_at_now = 0;
        else if (strcasecmp(t, "now") == 0)
            c->start_at_now = 1;
        else
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s '%s': expected beginning or now",
                             origin, k->name, shown);
        return AR_OK;
    case K_LOG_FORMAT:
        if (strcasecmp(t, "text") == 0)
            c->log_json = 0;
        else if (strcasecmp(t, "json") == 0)
            c->log_json = 1;
        else
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s '%s': expected text or json",
                             origin, k->name, shown);
        return AR_OK;
    case K_LOG_LEVEL:
        if (strcasecmp(t, "debug") == 0)
            c->log_level = 0;
        else if (strcasecmp(t, "info") == 0)
            c->log_level = 1;
        else if (strcasecmp(t, "warn") == 0 || strcasecmp(t, "warning") == 0)
            c->log_level = 2;
        else if (strcasecmp(t, "error") == 0)
            c->log_level = 3;
        else
            return ar_seterr(err, errlen, AR_ECONFIG,
                             "%s: invalid value for %s '%s': expected debug, info, warn or error",
                             origin, k->name, shown);
        return AR_OK;
    default:
        return ar_seterr(err, errlen, AR_ERR, "%s: internal error for key %s", origin, k->name);
    }
}

int ar_config_set(ar_config *c, const char *key, const char *value,
                  const char *origin, char *err, size_t errlen)
{
    const key_def *k;
    char shown[120];
    if (!origin)
        origin = "configuration";
    if (!key || !(k = find_key(key)))
        return ar_seterr(err, errlen, AR_ECONFIG, "%s: unknown key '%s'", origin,
                         show(key ? key : "", shown, sizeof shown));
    if (!value)
        value = "";
    return set_key(c, k, value, origin, err, errlen);
}

/* ---- YAML file --------------------------------------------------------- */

static int yaml_null(const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

static const char *event_what(yaml_event_type_t t)
{
    switch (t) {
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_ALIAS_EVENT: return "an alias";
    default: return "not a single value";
    }
}

static int load_file(ar_config *c, const char *path, char *err, size_t errlen)
{
    int rc = AR_ECONFIG;
    FILE *f = NULL;
    yaml_parser_t parser;
    int parser_ready = 0;
    yaml_event_t ev;
    int have_ev = 0;
    int docs = 0, in_map = 0, done = 0;
    char key[128] = "", origin[AR_PATH_LEN + 64], shown[120];
    size_t key_line = 0;
    int have_key = 0;
    unsigned char seen[NKEYS];
    struct stat sb;

    memset(seen, 0, sizeof seen);
    f = fopen(path, "rb");
    if (!f) {
        rc = ar_seterr(err, errlen, AR_ECONFIG, "cannot open config file %s: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = ar_seterr(err, errlen, AR_ECONFIG, "config file %s is not a regular file", path);
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "config file %s: cannot initialise the YAML parser", path);
        goto out;
    }
    parser_ready = 1;
    yaml_parser_set_input_file(&parser, f);

    while (!done) {
        size_t line;
        if (!yaml_parser_parse(&parser, &ev)) {
            const char *ctx = parser.context ? parser.context : "";
            rc = ar_seterr(err, errlen, AR_ECONFIG,
                           "config file %s line %zu column %zu: invalid YAML: %s%s%s",
                           path, parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                           ctx, *ctx ? ": " : "", parser.problem ? parser.problem : "parse error");
            goto out;
        }
        have_ev = 1;
        line = ev.start_mark.line + 1;

        switch (ev.type) {
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            break;
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                rc = ar_seterr(err, errlen, AR_ECONFIG,
                               "config file %s line %zu: only one YAML document is allowed", path, line);
                goto out;
            }
            break;
        case YAML_MAPPING_END_EVENT:
            in_map = 0;
            break;
        case YAML_SCALAR_EVENT:
            if (!in_map) {
                /* A document that is one scalar: only an empty one is fine. */
                if (!yaml_null(&ev)) {
                    rc = ar_seterr(err, errlen, AR_ECONFIG,
                                   "config file %s line %zu: expected a mapping of key: value lines",
                                   path, line);
                    goto out;
                }
                break;
            }
            if (!have_key) {
                const char *k = (const char *)ev.data.scalar.value;
                const key_def *kd;
                if (ev.data.scalar.length >= sizeof key || strlen(k) != ev.data.scalar.length
                    || !(kd = find_key(k))) {
                    rc = ar_seterr(err, errlen, AR_ECONFIG, "config file %s line %zu: unknown key '%s'",
                                   path, line, show(k, shown, sizeof shown));
                    goto out;
                }
                if (seen[kd - keys]) {
                    rc = ar_seterr(err, errlen, AR_ECONFIG,
                                   "config file %s line %zu: key '%s' is given twice", path, line, k);
                    goto out;
                }
                seen[kd - keys] = 1;
                snprintf(key, sizeof key, "%s", k);
                key_line = line;
                have_key = 1;
            } else {
                const char *v = yaml_null(&ev) ? "" : (const char *)ev.data.scalar.value;
                if (strlen(v) != (yaml_null(&ev) ? 0 : ev.data.scalar.length)) {
                    rc = ar_seterr(err, errlen, AR_ECONFIG,
                                   "config file %s line %zu: invalid value for %s: it contains a NUL byte",
                                   path, line, key);
                    goto out;
                }
                snprintf(origin, sizeof origin, "config file %s line %zu", path, key_line);
                rc = ar_config_set(c, key, v, origin, err, errlen);
                if (rc)
                    goto out;
                rc = AR_ECONFIG;
                have_key = 0;
            }
            break;
        case YAML_MAPPING_START_EVENT:
            if (!in_map && !have_key) {
                in_map = 1;
                break;
            }
            /* fall through */
        case YAML_SEQUENCE_START_EVENT:
        case YAML_ALIAS_EVENT:
        default:
            if (have_key)
                rc = ar_seterr(err, errlen, AR_ECONFIG,
                               "config file %s line %zu: the value of %s must be a single value, not %s",
                               path, line, key, event_what(ev.type));
            else if (in_map)
                rc = ar_seterr(err, errlen, AR_ECONFIG,
                               "config file %s line %zu: keys must be plain names, not %s",
                               path, line, event_what(ev.type));
            else
                rc = ar_seterr(err, errlen, AR_ECONFIG,
                               "config file %s line %zu: expected a mapping of key: value lines, not %s",
                               path, line, event_what(ev.type));
            goto out;
        }
        yaml_event_delete(&ev);
        have_ev = 0;
    }
    rc = AR_OK;

out:
    if (have_ev)
        yaml_event_delete(&ev);
    if (parser_ready)
        yaml_parser_delete(&parser);
    if (f)
        fclose(f);
    return rc;
}

/* ---- environment and checks across keys -------------------------------- */

static int load_env(ar_config *c, char *err, size_t errlen)
{
    size_t i;
    char origin[128];
    for (i = 0; i < NKEYS; i++) {
        const char *name = keys[i].env;
        const char *v = getenv(name);
        int rc;
        if ((!v || !*v) && keys[i].alias) {
            name = keys[i].alias;
            v = getenv(name);
        }
        if (!v || !*v)
            continue;
        snprintf(origin, sizeof origin, "environment variable %s", name);
        rc = set_key(c, &keys[i], v, origin, err, errlen);
        if (rc)
            return rc;
    }
    return AR_OK;
}

/* path made absolute and normalised as far as it exists (symlinks resolved
 * by realpath), the rest lexically ("." and ".." folded), into out. */
static void absolute(const char *path, char *out, size_t outlen)
{
    char joined[2 * AR_PATH_LEN + 2], cwd[AR_PATH_LEN], real[PATH_MAX];
    char *parts[512];
    size_t n = 0, o = 0;
    char *save = NULL, *tok;

    if (realpath(path, real)) {
        snprintf(out, outlen, "%s", real);
        return;
    }
    if (path[0] == '/' || !getcwd(cwd, sizeof cwd))
        snprintf(joined, sizeof joined, "%s", path);
    else
        snprintf(joined, sizeof joined, "%s/%s", cwd, path);
    for (tok = strtok_r(joined, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
        if (!strcmp(tok, "."))
            continue;
        if (!strcmp(tok, "..")) {
            if (n)
                n--;
            continue;
        }
        if (n < sizeof parts / sizeof parts[0])
            parts[n++] = tok;
    }
    out[0] = '\0';
    for (size_t i = 0; i < n && o + 1 < outlen; i++)
        o += (size_t)snprintf(out + o, outlen - o, "/%s", parts[i]);
    if (!n)
        snprintf(out, outlen, "/");
}

/* Is b the folder a or inside it? */
static int within(const char *a, const char *b)
{
    size_t n = strlen(a);
    if (n == 1 && a[0] == '/')
        return 1;
    return strncmp(a, b, n) == 0 && (b[n] == '\0' || b[n] == '/');
}

/* %XX sequences of s[0..n) decoded into out. */
static int percent_decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            c = (int)strtol(hex, NULL, 16);
            i += 2;
        }
        if (o + 1 >= outlen || c == 0)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* Move user:password@ of orthanc_url into the credential settings (ones
 * set explicitly win) and keep the URL without them. */
static int move_userinfo(ar_config *c, char *err, size_t errlen)
{
    char *host = strstr(c->orthanc_url, "://"), *end, *at, *colon;
    char user[256], pass[256];
    if (!host)
        return AR_OK;
    host += 3;
    end = host + strcspn(host, "/?#");
    at = memchr(host, '@', (size_t)(end - host));
    if (!at)
        return AR_OK;
    while (memchr(at + 1, '@', (size_t)(end - at - 1)))
        at = memchr(at + 1, '@', (size_t)(end - at - 1));
    colon = memchr(host, ':', (size_t)(at - host));
    if (percent_decode(host, (size_t)((colon ? colon : at) - host), user, sizeof user) ||
        (colon && percent_decode(colon + 1, (size_t)(at - colon - 1), pass, sizeof pass)))
        return ar_seterr(err, errlen, AR_ECONFIG,
                         "configuration: orthanc_url: the user name or password in it is not valid");
    if (!c->orthanc_username[0])
        snprintf(c->orthanc_username, sizeof c->orthanc_username, "%s", user);
    if (colon && !c->orthanc_password[0])
        snprintf(c->orthanc_password, sizeof c->orthanc_password, "%s", pass);
    memmove(host, at + 1, strlen(at + 1) + 1);
    return AR_OK;
}

/* The first line of orthanc_password_file becomes the password. */
static int read_password_file(ar_config *c, char *err, size_t errlen)
{
    FILE *f;
    char line[sizeof c->orthanc_password + 2];
    size_t n;
    if (!c->orthanc_password_file[0])
        return AR_OK;
    if (c->orthanc_password[0])
        return ar_seterr(err, errlen, AR_ECONFIG,
                         "configuration: set orthanc_password or orthanc_password_file, not both");
    f = fopen(c->orthanc_password_file, "r");
    if (!f)
        return ar_seterr(err, errlen, AR_ECONFIG, "configuration: orthanc_password_file %s: %s",
                         c->orthanc_password_file, strerror(errno));
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    n = strcspn(line, "\r\n");
    if (n >= sizeof c->orthanc_password)
        return ar_seterr(err, errlen, AR_ECONFIG,
                         "configuration: orthanc_password_file %s: the password is longer than %zu bytes",
                         c->orthanc_password_file, sizeof c->orthanc_password - 1);
    if (n == 0)
        return ar_seterr(err, errlen, AR_ECONFIG,
                         "configuration: orthanc_password_file %s is empty",
                         c->orthanc_password_file);
    memcpy(c->orthanc_password, line, n);
    c->orthanc_password[n] = '\0';
    memset(line, 0, sizeof line);
    return AR_OK;
}

static int check_all(ar_config *c, char *err, size_t errlen)
{
    char state[AR_PATH_LEN + 8], storage[AR_PATH_LEN + 8];
    int rc;
    if ((rc = move_userinfo(c, err, errlen)) || (rc = read_password_file(c, err, errlen)))
        return rc;
    if (c->retry_max < c->retry_initial)
        return ar_seterr(err, errlen, AR_ECONFIG,
                         "configuration: retry_max (%g) must not be less than retry_initial (%g)",
                         c->retry_max, c->retry_initial);
    /* an export named like the ledger could replace it; clean-up of the
     * storage folder could reach the state: keep them apart */
    absolute(c->state_dir, state, sizeof state);
    absolute(c->storage_dir, storage, sizeof storage);
    if (within(storage, state) || within(state, storage))
        return ar_seterr(err, errlen, AR_ECONFIG,
                         "configuration: state_dir (%s) and storage_dir (%s) must not be one "
                         "inside the other: exports could replace the state database",
                         state, storage);
    return AR_OK;
}

int ar_config_load(ar_config *c, const char *path, char *err, size_t errlen)
{
    int rc;
    const char *env_path;

    ar_config_defaults(c);
    if (!path) {
        env_path = getenv("AUTORTHANC_CONFIG");
        if (env_path && *env_path)
            path = env_path;
    }
    if (path) {
        if (strlen(path) >= sizeof c->config_file)
            return ar_seterr(err, errlen, AR_ECONFIG, "config file name is too long (%zu bytes)", strlen(path));
        rc = load_file(c, path, err, errlen);
        if (rc)
            return rc;
        snprintf(c->config_file, sizeof c->config_file, "%s", path);
    }
    rc = load_env(c, err, errlen);
    if (rc)
        return rc;
    return check_all(c, err, errlen);
}
