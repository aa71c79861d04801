/* orthanc_json.h - Orthanc's transport answers, decoded once, in C.
 *
 * The answers autorthanc itself acts on (/changes, /series/<id>, /jobs/<id>,
 * /system, /studies/<id> for arrivals, error bodies) are decoded here with
 * jansson: one parse per answer, no Lua state, so the watcher and the workers
 * read Orthanc without the rule engine (lua-cjson stays for what rules see,
 * in bindings/).  Nothing here can crash on hostile input: a body that is not
 * JSON (or not UTF-8) is AR_ENET "garbled answer" (retry); JSON of the wrong
 * shape is AR_ERR naming the answer and the field.
 */
#ifndef AR_ORTHANC_JSON_H
#define AR_ORTHANC_JSON_H

#include <stddef.h>
#include <stdint.h>

/* ---- one answer, parsed once ------------------------------------------------ */

typedef struct ar_ojson ar_ojson;

/* Parse body (what names the answer in messages, e.g. "/jobs/<id>"). */
int ar_ojson_parse(const char *body, size_t len, const char *what, ar_ojson **out, char *err,
                   size_t errlen);
void ar_ojson_free(ar_ojson *j);

/* The value at a dotted path ("Content.Description", "Last", "0.ID") as text:
 * strings as they are, integral numbers as integers, booleans as
 * "true"/"false", objects and lists as compact JSON.  AR_ENOTFOUND when the
 * path is absent or null (err says which), AR_ERR when it does not fit.
 * List indexes count from 0. */
int ar_ojson_text(const ar_ojson *j, const char *path, char *out, size_t outlen, char *err,
                  size_t errlen);

/* One-shot: parse body and read one path (for answers read for one field). */
int ar_ojson_get(const char *body, size_t len, const char *path, char *out, size_t outlen,
                 char *err, size_t errlen);

/* The list of strings at path ("" = the top level), or the "ID" fields of a
 * list of objects.  *items is one malloc'ed block (free(*items)),
 * NULL-terminated. */
int ar_ojson_list(const char *body, size_t len, const char *path, char ***items, size_t *n,
                  char *err, size_t errlen);

/* ---- /changes --------------------------------------------------------------- */

enum ar_change_kind {
    AR_CHANGE_OTHER = 0,
    AR_CHANGE_NEW_STUDY,
    AR_CHANGE_NEW_SERIES,
    AR_CHANGE_STABLE_STUDY,
    AR_CHANGE_STABLE_SERIES
};

typedef struct ar_change {
    int64_t seq;
    int kind;                /* enum ar_change_kind, decoded once from change_type */
    char change_type[32];    /* "StableStudy", "StableSeries", "NewInstance", ... */
    char resource_type[16];  /* "Study", "Series", "Instance", "Patient" */
    char id[128];            /* Orthanc id */
} ar_change;

/* Decode a /changes answer.  *out malloc'ed (NULL when n == 0). */
int ar_ojson_changes(const char *body, size_t len, ar_change **out, size_t *n, int64_t *last,
                     int *done, char *err, size_t errlen);

/* Decode a /series/<id> answer: the parent study id. */
int ar_ojson_parent_study(const char *body, size_t len, char *study_id, size_t idlen, char *err,
                          size_t errlen);

/* ---- writing ------------------------------------------------------------------ */

/* JSON string literal of s (quotes included); bytes that are not UTF-8 become
 * U+FFFD.  *out malloc'ed. */
int ar_json_quote(const char *s, char **out, char *err, size_t errlen);

#endif
