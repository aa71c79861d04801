/* test_core_snapshot.c - the study snapshot decoder (core/snapshot.h):
 * what is kept and how it is ordered, wrong shapes against garbled
 * answers (a cut answer is worth a retry even when the part read so far
 * already looked wrong), the memory limit, fixtures in any key order and
 * read from a file in pieces. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "snapshot.h"
#include "tap.h"
#include "testfs.h"

static const char *tag(const ar_snapshot *s, ar_snap_tags t, const char *name)
{
    const char *v = ar_snapshot_tag(s, t, name, NULL);
    return v ? v : "(absent)";
}

static int answers(const char *st, const char *se, const char *in, size_t limit,
                   ar_snapshot **out, char *err, size_t errlen)
{
    return ar_snapshot_from_answers(st, strlen(st), se, strlen(se), in, strlen(in), limit, out,
                                    err, errlen);
}

static void test_kept_and_ordered(void)
{
    ar_snapshot *s = NULL;
    char err[512] = "";
    const char *st = "{\"ID\": \"st\", \"IsStable\": true, \"LastUpdate\": \"20241201T101500\","
                     " \"MainDicomTags\": {\"StudyDescription\": \"old\", \"StudyDescription\": \"CT\","
                     " \"StudyID\": 7, \"Weight\": 1.5, \"Other\": null, \"List\": [1, {\"a\": 2}]},"
                     " \"PatientMainDicomTags\": {\"PatientID\": \"P1\"}, \"Series\": [\"x\"]}";
    const char *se = "[{\"ID\": \"s10\", \"MainDicomTags\": {\"SeriesNumber\": \"10\"}},"
                     " {\"ID\": \"s2\", \"MainDicomTags\": {\"SeriesNumber\": \" 2 \"}},"
                     " {\"ID\": \"sx\", \"MainDicomTags\": {\"SeriesNumber\": \"scout\"}},"
                     " {\"ID\": \"sa\", \"MainDicomTags\": {}, \"Extra\": {\"deep\": [[[]]]}}]";
    const char *in = "[{\"ID\": \"c\", \"ParentSeries\": \"s2\", \"FileSize\": 30,"
                     "  \"MainDicomTags\": {\"InstanceNumber\": \"3\"}},"
                     " {\"ID\": \"a\", \"ParentSeries\": \"s2\", \"FileSize\": 1.5,"
                     "  \"MainDicomTags\": {\"InstanceNumber\": \"1\"}},"
                     " {\"ID\": \"b\", \"ParentSeries\": \"s2\", \"MainDicomTags\": {\"InstanceNumber\": \"0x2\"}},"
                     " {\"ID\": \"late\", \"ParentSeries\": \"unlisted\"},"
                     " {\"ID\": \"d\", \"ParentSeries\": \"s10\", \"FileSize\": -4}]";
    int rc = answers(st, se, in, 0, &s, err, sizeof err);
    CHECK(rc == AR_OK && s, "answers decode: %s", err);
    if (!s)
        return;
    CHECK_STR(s->id, "st");
    CHECK(s->is_stable && s->last_update && !strcmp(s->last_update, "20241201T101500"),
          "IsStable, LastUpdate");
    CHECK_STR(tag(s, s->tags, "StudyDescription"), "CT"); /* the last value wins */
    CHECK_STR(tag(s, s->tags, "StudyID"), "7");           /* numbers as Lua shows them */
    CHECK_STR(tag(s, s->tags, "Weight"), "1.5");
    CHECK_STR(tag(s, s->tags, "Other"), "(absent)");      /* null, lists dropped */
    CHECK_STR(tag(s, s->tags, "List"), "(absent)");
    CHECK_STR(tag(s, s->patient, "PatientID"), "P1");
    CHECK_INT(s->nseries, 4);
    if (s->nseries == 4) {
        /* numeric SeriesNumber first (Lua's tonumber: spaces allowed), then the rest by id */
        CHECK_STR(s->series[0].id, "s2");
        CHECK_STR(s->series[1].id, "s10");
        CHECK_STR(s->series[2].id, "sa");
        CHECK_STR(s->series[3].id, "sx");
        CHECK_INT(s->series[0].n, 3);
        CHECK_INT(s->series[1].n, 1);
        CHECK_INT(s->series[2].n, 0);
        const ar_snap_instance *i0 = &s->instances[s->series[0].first];
        CHECK_STR(i0[0].id, "a");
        CHECK_STR(i0[1].id, "b"); /* hex, as tonumber reads it */
        CHECK_STR(i0[2].id, "c");
        CHECK_INT(i0[0].file_size, -1); /* not a whole number */
        CHECK_INT(i0[2].file_size, 30);
        CHECK_INT(s->instances[s->series[1].first].file_size, -1);
    }
    CHECK_INT(s->ninstances, 4);       /* "late" belongs to a series not listed */
    CHECK_INT(s->instances_listed, 5);
    CHECK(s->bytes > 0, "bytes counted");
    ar_snapshot *r = ar_snapshot_ref(s);
    ar_snapshot_free(s);
    CHECK_STR(r->id, "st"); /* still alive through the second reference */
    ar_snapshot_free(r);
}

static void test_shapes_and_garbles(void)
{
    ar_snapshot *s = NULL;
    char err[512];
    struct {
        const char *st, *se, *in;
        int rc;
        const char *msg;
    } cases[] = {
        {"{\"ID\": 5}", "[]", "[]", AR_ERR, "study: ID must be a string, got number"},
        {"{}", "[]", "[]", AR_ERR, "study: ID must be a string, got nil"},
        {"[1]", "[]", "[]", AR_ERR, "study: expected an object"},
        {"{\"ID\": \"\"}", "[]", "[]", AR_ERR, "study: ID is not a valid id"},
        {"{\"ID\": \"a\\u0000b\"}", "[]", "[]", AR_ERR, "ID is not a valid id"},
        {"{\"ID\": \"s\", \"MainDicomTags\": [1]}", "[]", "[]", AR_ERR,
         "study MainDicomTags: expected an object of tags, got a list"},
        {"{\"ID\": \"s\", \"LastUpdate\": 3}", "[]", "[]", AR_ERR, "LastUpdate must be a string"},
        {"{\"ID\": \"s\"}", "{\"a\": 1}", "[]", AR_ERR, "series: expected a list"},
        {"{\"ID\": \"s\"}", "[{\"ID\": \"x\"}, {\"ID\": \"x\"}]", "[]", AR_ERR,
         "series[2]: series x is listed twice"},
        {"{\"ID\": \"s\"}", "[]", "[{\"ID\": \"i\", \"ParentSeries\": null}]", AR_ERR,
         "instances[1]: ParentSeries must be a string, got null"},
        {"{\"ID\": \"s\"}", "[]", "[3]", AR_ERR, "instances[1]: expected an object"},
        /* garbled: not JSON, or cut short (even after a part that looked wrong) */
        {"<html>", "[]", "[]", AR_ENET, "/studies/{id}: invalid JSON"},
        {"{\"ID\": \"s\"}", "[{\"ID\": \"x\"}", "[]", AR_ENET, "/studies/{id}/series: invalid JSON"},
        {"{\"ID\": \"s\", \"MainDicomTags\": [1, 2", "[]", "[]", AR_ENET, "invalid JSON"},
        {"{\"ID\": \"s\"}", "[]", "", AR_ENET, "/studies/{id}/instances: invalid JSON"},
        /* harmless oddities: {} and [] are one thing in Lua */
        {"{\"ID\": \"s\", \"MainDicomTags\": []}", "{}", "[]", AR_OK, ""},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        err[0] = '\0';
        int rc = answers(cases[k].st, cases[k].se, cases[k].in, 0, &s, err, sizeof err);
        CHECK(rc == cases[k].rc && strstr(err, cases[k].msg), "case %zu: %d %s (want %d %s)", k,
              rc, err, cases[k].rc, cases[k].msg);
        CHECK(rc == AR_OK ? s != NULL : s == NULL, "case %zu: a snapshot only on success", k);
        ar_snapshot_free(s);
        s = NULL;
    }
}

static char *many(size_t n, size_t *len)
{
    size_t cap = 256 + n * 120, o = 0;
    char *s = malloc(cap);
    if (!s)
        exit(2);
    /* instances before series and study: a fixture's keys come in any order */
    o += (size_t)snprintf(s + o, cap - o, "{\"comment\": {\"x\": [1]}, \"instances\": [");
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o,
                              "%s{\"ID\": \"i%zu\", \"ParentSeries\": \"se\", \"MainDicomTags\":"
                              " {\"InstanceNumber\": \"%zu\"}}", i ? "," : "", i, n - i);
    o += (size_t)snprintf(s + o, cap - o,
                          "], \"series\": [{\"ID\": \"se\"}], \"study\": {\"ID\": \"st\"}}");
    *len = o;
    return s;
}

static void test_fixtures_and_limit(void)
{
    ar_snapshot *s = NULL;
    char err[512] = "";
    size_t len, n = 5000;
    char *fx = many(n, &len);
    int rc = ar_snapshot_from_fixture(fx, len, NULL, 0, &s, err, sizeof err);
    CHECK(rc == AR_OK && s && s->ninstances == n, "fixture in any key order: %s", err);
    if (s) {
        CHECK_STR(s->instances[0].id, "i4999"); /* InstanceNumber 1 */
        ar_snapshot_free(s);
        s = NULL;
    }
    rc = ar_snapshot_from_fixture(fx, len, NULL, 64 * 1024, &s, err, sizeof err);
    CHECK(rc == AR_ENOMEM && strstr(err, "64 KB"), "over the limit: %d %s", rc, err);

    char *dir = tf_new_dir("ar-snapshot");
    char path[4096];
    snprintf(path, sizeof path, "%s/fx.json", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(fx, 1, len, f) == len && fclose(f) == 0, "write %s", path);
    rc = ar_snapshot_from_fixture_file(path, 0, &s, err, sizeof err);
    CHECK(rc == AR_OK && s && s->ninstances == n, "the same read from a file: %s", err);
    ar_snapshot_free(s);
    s = NULL;
    fx[len / 2] = '\0';
    f = fopen(path, "wb");
    CHECK(f && fwrite(fx, 1, len / 2, f) == len / 2 && fclose(f) == 0, "write %s", path);
    rc = ar_snapshot_from_fixture_file(path, 0, &s, err, sizeof err);
    CHECK(rc == AR_ERR && strstr(err, path) && strstr(err, "invalid JSON"),
          "a cut fixture names the file: %d %s", rc, err);
    rc = ar_snapshot_from_fixture_file("/nonexistent/fx.json", 0, &s, err, sizeof err);
    CHECK(rc == AR_EIO && strstr(err, "/nonexistent/fx.json"), "a missing file: %s", err);
    rc = ar_snapshot_from_fixture("{\"series\": []}", 14, "case.json", 0, &s, err, sizeof err);
    CHECK(rc == AR_ERR && strstr(err, "study: expected an object"), "no study: %s", err);
    rc = ar_snapshot_from_fixture("[]", 2, "case.json", 0, &s, err, sizeof err);
    CHECK(rc == AR_ERR && strstr(err, "case.json: expected an object"), "not an object: %s", err);
    free(fx);
    tf_rm_tree(dir);
}

int main(void)
{
    test_kept_and_ordered();
    test_shapes_and_garbles();
    test_fixtures_and_limit();
    return tap_done();
}
