/* snapshot.h - a study as a value: Orthanc's answers about it, decoded once.
 *
 * A snapshot is what the rule engine evaluates and plans against
 * (bindings/study.c gives rules a read-only view of it).  It is built from
 * the three answers /studies/<id>, /studies/<id>/series and
 * /studies/<id>/instances (Orthanc 1.10+ shapes), or from a fixture file
 * {"study": ..., "series": [...], "instances": [...]}, by a streaming JSON
 * parser (yajl): the answers are never held as a tree, and a fixture file
 * is read in small pieces, so a study costs its compact form only
 * (~150-250 bytes per instance: ids and tag values in an arena, 16 bytes
 * per tag).
 *
 * What is kept (the rest of each answer is skipped):
 *   study      ID, LastUpdate, IsStable, MainDicomTags, PatientMainDicomTags
 *   series     ID, MainDicomTags
 *   instances  ID, ParentSeries, FileSize, MainDicomTags
 * Tag values are kept when they are strings; numbers become strings
 * (integers as "%d", others as Lua's tostring); null, booleans, lists and
 * objects are dropped.  A repeated key keeps its last value.  Series are
 * sorted by SeriesNumber (numeric, like Lua's tonumber; non-numeric after),
 * then id; each series' instances by InstanceNumber the same way.
 * Instances of a series the series answer does not list are not kept
 * (they arrived between the requests; the next stable event brings them).
 *
 * Errors: an answer that is not JSON gives AR_ENET ("<answer>: invalid
 * JSON: ..."; garbled in transit, worth retrying), a fixture that is not
 * JSON gives AR_ERR; JSON of the wrong shape gives AR_ERR naming the answer
 * and field ("instances[3]: ParentSeries must be a string, got null"); a
 * snapshot that would hold more than `limit` bytes gives AR_ENOMEM as soon
 * as it gets there (0: no limit).
 *
 * A snapshot is immutable and reference counted (ar_snapshot_ref/_free);
 * the count is not atomic: one thread owns a snapshot and its references.
 */
#ifndef AR_SNAPSHOT_H
#define AR_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ar_snap_tag {
    const char *value;       /* NUL-terminated; may hold NULs (len counts them) */
    uint32_t len;
    uint16_t name;           /* index into names */
} ar_snap_tag;

typedef struct ar_snap_tags {
    uint32_t first, n;       /* tag[first .. first+n) */
} ar_snap_tags;

typedef struct ar_snap_instance {
    const char *id;
    long long file_size;     /* -1: not given */
    ar_snap_tags tags;
} ar_snap_instance;

typedef struct ar_snap_series {
    const char *id;
    ar_snap_tags tags;
    size_t first, n;         /* its instances: instances[first .. first+n) */
} ar_snap_series;

typedef struct ar_snapshot {
    const char *id;
    const char *last_update; /* NULL: not given */
    int is_stable;
    ar_snap_tags tags, patient;
    const ar_snap_series *series;     /* in order */
    size_t nseries;
    const ar_snap_instance *instances; /* grouped by series, in order */
    size_t ninstances;
    size_t instances_listed; /* in the answer, with those of unlisted series */
    const ar_snap_tag *tag;  /* the tag pool the ar_snap_tags index */
    const char *const *names; /* tag names */
    size_t nnames;
    size_t bytes;            /* memory it holds */
    int refs_;
    void *mem_;
} ar_snapshot;

int ar_snapshot_from_answers(const char *study, size_t study_len, const char *series,
                             size_t series_len, const char *instances, size_t instances_len,
                             size_t limit, ar_snapshot **out, char *err, size_t errlen);
/* name: how messages call it ("fixture" when NULL). */
int ar_snapshot_from_fixture(const char *json, size_t len, const char *name, size_t limit,
                             ar_snapshot **out, char *err, size_t errlen);
/* The same, reading the file at path in small pieces. */
int ar_snapshot_from_fixture_file(const char *path, size_t limit, ar_snapshot **out, char *err,
                                  size_t errlen);

ar_snapshot *ar_snapshot_ref(ar_snapshot *s);
void ar_snapshot_free(ar_snapshot *s);

/* The value of tag `name` in tags (NULL when absent); *len its length. */
const char *ar_snapshot_tag(const ar_snapshot *s, ar_snap_tags tags, const char *name,
                            size_t *len);

#endif
