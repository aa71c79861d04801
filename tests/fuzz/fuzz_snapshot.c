/* fuzz_snapshot.c - libFuzzer target for the study snapshot decoder
 * (core/snapshot.h).
 *
 * Input: any bytes, decoded twice: as a fixture, and split at its first two
 * 0x01 bytes into the three answers (/studies/<id>, .../series,
 * .../instances).  Either it is refused with a message and no snapshot, or
 * the snapshot keeps its promises: a non-empty study id, every series'
 * instance range inside the instance array and the ranges covering it in
 * order, every tag index inside the pool with a known name, and the same
 * result under a memory limit that it fits (a smaller one refuses with
 * AR_ENOMEM or succeeds, never anything else).  A broken promise aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_snapshot: broken promise: %s\n", what);
    abort();
}

static void check_tags(const ar_snapshot *s, ar_snap_tags t, size_t ntags)
{
    if ((size_t)t.first + t.n > ntags)
        fail("a tag range outside the pool");
    for (uint32_t i = 0; i < t.n; i++) {
        const ar_snap_tag *g = &s->tag[t.first + i];
        if (g->name >= s->nnames || !s->names[g->name] || !g->value || g->value[g->len] != '\0')
            fail("a tag without a name or a terminated value");
    }
}

/* The pool's size is not public: bound it by the largest range end seen. */
static void check(const ar_snapshot *s, int rc, const char *err)
{
    size_t k, next = 0, ntags = 0;
    if (rc) {
        if (s || !err[0])
            fail("a refusal without a message, or with a snapshot");
        return;
    }
    if (!s || !s->id || !s->id[0] || strlen(s->id) > 127)
        fail("a snapshot without a valid study id");
#define END(t) ((size_t)(t).first + (t).n)
    ntags = END(s->tags) > END(s->patient) ? END(s->tags) : END(s->patient);
    for (k = 0; k < s->nseries; k++)
        if (END(s->series[k].tags) > ntags)
            ntags = END(s->series[k].tags);
    for (k = 0; k < s->ninstances; k++)
        if (END(s->instances[k].tags) > ntags)
            ntags = END(s->instances[k].tags);
    check_tags(s, s->tags, ntags);
    check_tags(s, s->patient, ntags);
    for (k = 0; k < s->nseries; k++) {
        const ar_snap_series *se = &s->series[k];
        if (!se->id || (se->n && se->first != next) || se->first + se->n > s->ninstances)
            fail("series instance ranges out of order or out of bounds");
        next += se->n;
        check_tags(s, se->tags, ntags);
    }
    if (next != s->ninstances || s->ninstances > s->instances_listed)
        fail("instances not covered by the series");
    for (k = 0; k < s->ninstances; k++) {
        if (!s->instances[k].id)
            fail("an instance without an id");
        check_tags(s, s->instances[k].tags, ntags);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    ar_snapshot *s = NULL, *t = NULL;
    char err[512] = "";
    const char *cut1, *cut2;
    int rc;

    rc = ar_snapshot_from_fixture(d, size, "fuzz", 0, &s, err, sizeof err);
    check(s, rc, err);
    if (s) {
        size_t limit = s->bytes / 2 + 1;
        err[0] = '\0';
        int rc2 = ar_snapshot_from_fixture(d, size, "fuzz", limit, &t, err, sizeof err);
        if (rc2 && rc2 != AR_ENOMEM)
            fail("a limit changed a success into another error");
        check(t, rc2, err);
        ar_snapshot_free(t);
        ar_snapshot_free(s);
        s = NULL;
    }
    cut1 = memchr(d, 1, size);
    cut2 = cut1 ? memchr(cut1 + 1, 1, size - (size_t)(cut1 + 1 - d)) : NULL;
    if (cut2) {
        err[0] = '\0';
        rc = ar_snapshot_from_answers(d, (size_t)(cut1 - d), cut1 + 1, (size_t)(cut2 - cut1 - 1),
                                      cut2 + 1, size - (size_t)(cut2 + 1 - d), 0, &s, err,
                                      sizeof err);
        check(s, rc, err);
        ar_snapshot_free(s);
    }
    return 0;
}
