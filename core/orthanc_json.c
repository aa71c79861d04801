/* orthanc_json.c - see orthanc_json.h */
#include "orthanc_json.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

struct ar_ojson {
    json_t *root;
};

static int parse_root(const char *body, size_t len, const char *what, json_t **out, char *err,
                      size_t errlen)
{
    json_error_t je;
    /* JSON_DECODE_ANY: a bare value is still JSON (its shape is checked later);
     * JSON_REJECT_DUPLICATES is not used: Orthanc never sends duplicates. */
    *out = json_loadb(body ? body : "", body ? len : 0, JSON_DECODE_ANY, &je);
    if (!*out)
        return ar_seterr(err, errlen, AR_ENET, "%s: garbled answer (invalid JSON: %s at byte %d)",
                         what, je.text, je.position);
    return AR_OK;
}

int ar_ojson_parse(const char *body, size_t len, const char *what, ar_ojson **out, char *err,
                   size_t errlen)
{
    int rc = AR_ERR;
    json_t *root = NULL;
    *out = NULL;
    if ((rc = parse_root(body, len, what, &root, err, errlen)))
        goto out;
    ar_ojson *j = malloc(sizeof *j);
    if (!j) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "%s: out of memory", what);
        goto out;
    }
    j->root = root;
    root = NULL;
    *out = j;
    rc = AR_OK;
out:
    json_decref(root);
    return rc;
}

void ar_ojson_free(ar_ojson *j)
{
    if (!j)
        return;
    json_decref(j->root);
    free(j);
}

/* Walk a dotted path: object keys, or list indexes for lists. */
static json_t *walk(json_t *v, const char *path)
{
    char key[256];
    const char *p = path;
    while (v && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof key)
            return NULL;
        memcpy(key, p, n);
        key[n] = 0;
        if (json_is_object(v)) {
            v = json_object_get(v, key);
        } else if (json_is_array(v)) {
            char *end;
            unsigned long i = strtoul(key, &end, 10);
            v = *end ? NULL : json_array_get(v, i);
        } else {
            v = NULL;
        }
        p += n + (dot ? 1 : 0);
    }
    return v;
}

static int value_text(json_t *v, const char *path, char *out, size_t outlen, char *err,
                      size_t errlen)
{
    char num[64];
    const char *s = NULL;
    size_t n = 0;
    char *dumped = NULL;
    int rc = AR_ERR;

    if (!v || json_is_null(v))
        return ar_seterr(err, errlen, AR_ENOTFOUND, "JSON answer has no '%s'", path);
    if (json_is_string(v)) {
        s = json_string_value(v);
        n = json_string_length(v);
    } else if (json_is_integer(v)) {
        n = (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = num;
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            n = (size_t)snprintf(num, sizeof num, "%.0f", d);
        else
            n = (size_t)snprintf(num, sizeof num, "%.17g", d);
        s = num;
    } else if (json_is_boolean(v)) {
        s = json_is_true(v) ? "true" : "false";
        n = strlen(s);
    } else {
        dumped = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!dumped)
            return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
        s = dumped;
        n = strlen(s);
    }
    if (n >= outlen || memchr(s, 0, n)) {
        rc = ar_seterr(err, errlen, AR_ERR, "JSON value of '%s' does not fit (%zu bytes)", path, n);
        goto out;
    }
    memcpy(out, s, n);
    out[n] = 0;
    rc = AR_OK;
out:
    free(dumped);
    return rc;
}

int ar_ojson_text(const ar_ojson *j, const char *path, char *out, size_t outlen, char *err,
                  size_t errlen)
{
    if (outlen)
        out[0] = 0;
    return value_text(walk(j->root, path), path, out, outlen, err, errlen);
}

int ar_ojson_get(const char *body, size_t len, const char *path, char *out, size_t outlen,
                 char *err, size_t errlen)
{
    json_t *root = NULL;
    if (outlen)
        out[0] = 0;
    int rc = parse_root(body, len, path, &root, err, errlen);
    if (rc == AR_OK)
        rc = value_text(walk(root, path), path, out, outlen, err, errlen);
    json_decref(root);
    return rc;
}

int ar_ojson_list(const char *body, size_t len, const char *path, char ***items, size_t *n,
                  char *err, size_t errlen)
{
    int rc = AR_ERR;
    json_t *root = NULL;
    char **v = NULL;
    *items = NULL;
    *n = 0;
    if ((rc = parse_root(body, len, path && *path ? path : "list answer", &root, err, errlen)))
        goto out;
    json_t *list = path && *path ? walk(root, path) : root;
    if (!json_is_array(list)) {
        rc = ar_seterr(err, errlen, AR_ERR, "JSON answer has no list at '%s'", path ? path : "");
        goto out;
    }
    size_t count = json_array_size(list), text = 0;
    for (size_t i = 0; i < count; i++) {
        json_t *it = json_array_get(list, i);
        if (json_is_object(it))
            it = json_object_get(it, "ID");
        if (!json_is_string(it) || strlen(json_string_value(it)) != json_string_length(it)) {
            rc = ar_seterr(err, errlen, AR_ERR, "list item %zu is not an id", i + 1);
            goto out;
        }
        text += json_string_length(it) + 1;
    }
    /* one block: the pointer array followed by the text */
    v = malloc((count + 1) * sizeof *v + text + 1);
    if (!v) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
        goto out;
    }
    char *p = (char *)(v + count + 1);
    for (size_t i = 0; i < count; i++) {
        json_t *it = json_array_get(list, i);
        if (json_is_object(it))
            it = json_object_get(it, "ID");
        size_t l = json_string_length(it);
        memcpy(p, json_string_value(it), l + 1);
        v[i] = p;
        p += l + 1;
    }
    v[count] = NULL;
    *items = v;
    *n = count;
    v = NULL;
    rc = AR_OK;
out:
    free(v);
    json_decref(root);
    return rc;
}

static int change_kind(const char *t)
{
    if (strcmp(t, "NewStudy") == 0)
        return AR_CHANGE_NEW_STUDY;
    if (strcmp(t, "NewSeries") == 0)
        return AR_CHANGE_NEW_SERIES;
    if (strcmp(t, "StableStudy") == 0)
        return AR_CHANGE_STABLE_STUDY;
    if (strcmp(t, "StableSeries") == 0)
        return AR_CHANGE_STABLE_SERIES;
    return AR_CHANGE_OTHER;
}

/* A string field of change i into out (outlen - 1 bytes at most, no NUL). */
static int change_str(json_t *c, size_t i, const char *key, char *out, size_t outlen, char *err,
                      size_t errlen)
{
    json_t *v = json_object_get(c, key);
    if (!json_is_string(v))
        return ar_seterr(err, errlen, AR_ERR, "/changes: Changes[%zu].%s must be a string", i, key);
    size_t n = json_string_length(v);
    if (n >= outlen || strlen(json_string_value(v)) != n)
        return ar_seterr(err, errlen, AR_ERR,
                         "/changes: Changes[%zu].%s is not a valid value (%zu bytes)", i, key, n);
    memcpy(out, json_string_value(v), n + 1);
    return AR_OK;
}

int ar_ojson_changes(const char *body, size_t len, ar_change **out, size_t *n, int64_t *last,
                     int *done, char *err, size_t errlen)
{
    int rc = AR_ERR;
    json_t *root = NULL;
    ar_change *v = NULL;
    *out = NULL;
    *n = 0;
    if ((rc = parse_root(body, len, "/changes", &root, err, errlen)))
        goto out;
    rc = AR_ERR;
    if (!json_is_object(root)) {
        ar_seterr(err, errlen, AR_ERR, "/changes: expected an object");
        goto out;
    }
    json_t *list = json_object_get(root, "Changes");
    json_t *jl = json_object_get(root, "Last");
    json_t *jd = json_object_get(root, "Done");
    if (!json_is_array(list)) {
        ar_seterr(err, errlen, AR_ERR, "/changes: Changes must be a list");
        goto out;
    }
    if (!json_is_integer(jl) || json_integer_value(jl) < 0) {
        ar_seterr(err, errlen, AR_ERR, "/changes: Last must be a non-negative integer");
        goto out;
    }
    if (jd && !json_is_boolean(jd)) {
        ar_seterr(err, errlen, AR_ERR, "/changes: Done must be true or false");
        goto out;
    }
    size_t count = json_array_size(list);
    if (count) {
        v = calloc(count, sizeof *v);
        if (!v) {
            rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory for %zu changes", count);
            goto out;
        }
    }
    for (size_t i = 0; i < count; i++) {
        json_t *c = json_array_get(list, i);
        ar_change *ch = &v[i];
        if (!json_is_object(c)) {
            ar_seterr(err, errlen, AR_ERR, "/changes: Changes[%zu] must be an object", i);
            goto out;
        }
        json_t *seq = json_object_get(c, "Seq");
        if (!json_is_integer(seq) || json_integer_value(seq) < 0) {
            ar_seterr(err, errlen, AR_ERR, "/changes: Changes[%zu].Seq must be a non-negative integer",
                      i);
            goto out;
        }
        ch->seq = json_integer_value(seq);
        if (change_str(c, i, "ChangeType", ch->change_type, sizeof ch->change_type, err, errlen) ||
            change_str(c, i, "ResourceType", ch->resource_type, sizeof ch->resource_type, err,
                       errlen) ||
            change_str(c, i, "ID", ch->id, sizeof ch->id, err, errlen))
            goto out;
        ch->kind = change_kind(ch->change_type);
    }
    *last = json_integer_value(jl);
    *done = json_is_true(jd);
    *out = count ? v : NULL;
    *n = count;
    if (count)
        v = NULL;
    rc = AR_OK;
out:
    free(v);
    json_decref(root);
    return rc;
}

int ar_ojson_parent_study(const char *body, size_t len, char *study_id, size_t idlen, char *err,
                          size_t errlen)
{
    int rc = AR_ERR;
    json_t *root = NULL;
    if (idlen)
        study_id[0] = 0;
    if ((rc = parse_root(body, len, "/series/{id}", &root, err, errlen)))
        goto out;
    json_t *p = json_is_object(root) ? json_object_get(root, "ParentStudy") : NULL;
    size_t n = json_is_string(p) ? json_string_length(p) : 0;
    if (!json_is_string(p) || n == 0 || n >= idlen || strlen(json_string_value(p)) != n) {
        rc = ar_seterr(err, errlen, AR_ERR, "/series: ParentStudy must be an id");
        goto out;
    }
    memcpy(study_id, json_string_value(p), n + 1);
    rc = AR_OK;
out:
    json_decref(root);
    return rc;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    size_t n = (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || (n == 2 && s[0] < 0xC2) || (n == 4 && s[0] > 0xF4))
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0)))
        return 0; /* overlong, surrogate */
    if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90)))
        return 0;
    return n;
}

int ar_json_quote(const char *s, char **out, char *err, size_t errlen)
{
    size_t len = strlen(s);
    char *q = malloc(len * 6 + 3); /* worst case: every byte \u00XX */
    *out = NULL;
    if (!q)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    size_t o = 0;
    q[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_len(p);
        if (n == 0) {
            memcpy(q + o, "\\ufffd", 6);
            o += 6;
            p++;
            continue;
        }
        if (n > 1) {
            memcpy(q + o, p, n);
            o += n;
            p += n;
            continue;
        }
        unsigned char c = *p++;
        if (c == '"' || c == '\\') {
            q[o++] = '\\';
            q[o++] = (char)c;
        } else if (c == '\n') {
            q[o++] = '\\';
            q[o++] = 'n';
        } else if (c == '\t') {
            q[o++] = '\\';
            q[o++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(q + o, 7, "\\u%04x", c);
        } else {
            q[o++] = (char)c;
        }
    }
    q[o++] = '"';
    q[o] = 0;
    *out = q;
    return AR_OK;
}
