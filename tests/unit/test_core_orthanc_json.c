/* test_core_orthanc_json.c - Orthanc's transport answers decoded in C
 * (core/orthanc_json.h): a real /changes answer recorded from Orthanc, hostile
 * bodies (bad types, NaN, hex, deep nesting, binary garbage, invalid UTF-8,
 * over-long ids) refused with the right code, /series parent ids, dotted
 * field reads, id lists, and string quoting.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "orthanc_json.h"
#include "tap.h"
#include "testfs.h"

static char datadir[4096];

static char *data(const char *name, size_t *len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", datadir, name);
    char *s = tf_slurp(path, len);
    if (!s) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    return s;
}

static int has(const char *s, const char *needle)
{
    return strstr(s, needle) != NULL;
}

static void test_changes(void)
{
    ar_change *ch = NULL;
    size_t n = 0, len, i;
    int64_t last = -1;
    int done = -1, rc;
    char err[1024];
    char *body = data("changes_basic.json", &len);

    rc = ar_ojson_changes(body, len, &ch, &n, &last, &done, err, sizeof err);
    CHECK(rc == 0, "decode real /changes: %s", err);
    CHECK_INT(n, 11);
    CHECK_INT(last, 11);
    CHECK_INT(done, 1);
    if (n == 11) {
        CHECK_INT(ch[0].seq, 1);
        CHECK_STR(ch[0].change_type, "NewInstance");
        CHECK_STR(ch[0].resource_type, "Instance");
        CHECK_STR(ch[9].change_type, "StableStudy");
        CHECK_STR(ch[9].resource_type, "Study");
        CHECK_STR(ch[9].id, "fbaf8b71-249f4739-4be973ff-75b32d02-aeec7927");
    }
    free(ch);
    free(body);

    {
        const char *s = "{\"Changes\":[],\"Done\":true,\"Last\":0}";
        rc = ar_ojson_changes(s, strlen(s), &ch, &n, &last, &done, err, sizeof err);
    }
    CHECK(rc == 0 && n == 0 && ch == NULL && last == 0, "empty /changes: %s", err);

    {
        static const char *bad[] = {
            "",
            "{",
            "[]",
            "null",
            "{\"Changes\":5,\"Done\":true,\"Last\":1}",
            "{\"Changes\":[],\"Done\":true}",
            "{\"Changes\":[],\"Done\":\"yes\",\"Last\":1}",
            "{\"Changes\":[],\"Done\":true,\"Last\":1.5}",
            "{\"Changes\":[],\"Done\":true,\"Last\":-5}",
            "{\"Changes\":[],\"Done\":true,\"Last\":1e400}",
            "{\"Changes\":[],\"Done\":true,\"Last\":NaN}",
            "{\"Changes\":[],\"Done\":true,\"Last\":Infinity}",
            "{\"Changes\":[],\"Done\":true,\"Last\":0x10}",
            "{\"Changes\":[null],\"Done\":true,\"Last\":1}",
            "{\"Changes\":[{\"Seq\":\"1\",\"ChangeType\":\"A\",\"ResourceType\":\"B\",\"ID\":\"c\"}],\"Done\":true,\"Last\":1}",
            "{\"Changes\":[{\"Seq\":-1,\"ChangeType\":\"A\",\"ResourceType\":\"B\",\"ID\":\"c\"}],\"Done\":true,\"Last\":1}",
            "{\"Changes\":[{\"Seq\":1,\"ChangeType\":7,\"ResourceType\":\"B\",\"ID\":\"c\"}],\"Done\":true,\"Last\":1}",
            "{\"Changes\":[{\"Seq\":1,\"ChangeType\":\"A\",\"ResourceType\":\"B\",\"ID\":\"c\\u0000d\"}],\"Done\":true,\"Last\":1}",
            "{\"Changes\":[{\"Seq\":1,\"ChangeType\":\"A\",\"ResourceType\":\"B\",\"ID\":null}],\"Done\":true,\"Last\":1}",
            "{\"Changes\":[{\"Seq\":1,\"ChangeType\":\"A\",\"ResourceType\":\"B\",\"ID\":\"\xff\xfe\"}],\"Done\":true,\"Last\":1}x",
        };
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            ch = NULL;
            err[0] = '\0';
            rc = ar_ojson_changes(bad[i], strlen(bad[i]), &ch, &n, &last, &done, err,
                                          sizeof err);
            CHECK(rc != 0 && ch == NULL && err[0], "bad /changes #%zu refused (rc=%d, err=%s)", i,
                  rc, err);
            /* Not JSON at all: garbled in transit, retryable; else a bad shape. */
            CHECK(rc == (has(err, "garbled") ? AR_ENET : AR_ERR), "#%zu code %d: %s", i, rc,
                  err);
        }
    }
    {
        /* Over-long ID, deep nesting, huge body of garbage. */
        char *big = malloc(1 << 20);
        size_t k;
        const char *head = "{\"Changes\":[{\"Seq\":1,\"ChangeType\":\"A\",\"ResourceType\":\"B\",\"ID\":\"";
        size_t hl = strlen(head);
        memcpy(big, head, hl);
        for (k = hl; k < hl + 5000; k++)
            big[k] = 'x';
        strcpy(big + k, "\"}],\"Done\":true,\"Last\":1}");
        rc = ar_ojson_changes(big, strlen(big), &ch, &n, &last, &done, err, sizeof err);
        CHECK(rc != 0 && has(err, "ID"), "over-long ID refused: %s", err);
        for (k = 0; k < 200000; k++)
            big[k] = '[';
        rc = ar_ojson_changes(big, 200000, &ch, &n, &last, &done, err, sizeof err);
        CHECK(rc != 0, "deep nesting refused: %s", err);
        for (k = 0; k < (1 << 20); k++)
            big[k] = (char)(k * 7 + 3);
        rc = ar_ojson_changes(big, 1 << 20, &ch, &n, &last, &done, err, sizeof err);
        CHECK(rc != 0, "binary garbage refused: %s", err);
        free(big);
    }
    {
        /* Invalid UTF-8 (Orthanc only sends UTF-8): a garbled answer, not a crash. */
        const char *s = "{\"Changes\":[{\"Seq\":3,\"ChangeType\":\"StableStudy\",\"ResourceType\":"
                        "\"Study\",\"ID\":\"\xff\xfe\xc0\"}],\"Done\":false,\"Last\":3}";
        ch = NULL;
        rc = ar_ojson_changes(s, strlen(s), &ch, &n, &last, &done, err, sizeof err);
        CHECK(rc == AR_ENET && ch == NULL, "invalid UTF-8 id is garbled: %d %s", rc, err);
        s = "{\"Changes\":[{\"Seq\":3,\"ChangeType\":\"StableStudy\",\"ResourceType\":"
            "\"Study\",\"ID\":\"ab\"},{\"Seq\":4,\"ChangeType\":\"NewSeries\",\"ResourceType\":"
            "\"Series\",\"ID\":\"cd\"}],\"Done\":false,\"Last\":9}";
        rc = ar_ojson_changes(s, strlen(s), &ch, &n, &last, &done, err, sizeof err);
        CHECK(rc == 0 && n == 2 && done == 0 && last == 9, "two changes: %s", err);
        if (rc == 0 && n == 2) {
            CHECK_INT(ch[0].kind, AR_CHANGE_STABLE_STUDY);
            CHECK_INT(ch[1].kind, AR_CHANGE_NEW_SERIES);
        }
        free(ch);
    }
    {
        char id[128];
        size_t l2;
        char *s = data("orthanc_series.json", &l2);
        const char *t;
        /* /series/<id> is one object; the list answer is not. */
        rc = ar_ojson_parent_study(s, l2, id, sizeof id, err, sizeof err);
        CHECK(rc != 0, "a list is not a /series/<id> answer");
        free(s);
        t = "{\"ID\":\"x\",\"ParentStudy\":\"fbaf8b71-249f4739-4be973ff-75b32d02-aeec7927\"}";
        rc = ar_ojson_parent_study(t, strlen(t), id, sizeof id, err, sizeof err);
        CHECK(rc == 0, "parent study: %s", err);
        CHECK_STR(id, "fbaf8b71-249f4739-4be973ff-75b32d02-aeec7927");
        t = "{\"ParentStudy\":42}";
        rc = ar_ojson_parent_study(t, strlen(t), id, sizeof id, err, sizeof err);
        CHECK(rc == AR_ERR && id[0] == '\0', "numeric parent refused");
        t = "{\"ParentStudy\": \"abc";
        rc = ar_ojson_parent_study(t, strlen(t), id, sizeof id, err, sizeof err);
        CHECK(rc == AR_ENET && id[0] == '\0', "garbled /series answer: %d %s", rc, err);
    }
}


static void test_fields(void)
{
    char out[64], err[256];
    const char *job = "{\"ID\":\"j-1\",\"State\":\"Failure\",\"Progress\":40,\"Ratio\":2.0,"
                      "\"Ok\":false,\"Content\":{\"Description\":\"x\",\"List\":[\"a\",\"b\"]},"
                      "\"Null\":null}";
    ar_ojson *j = NULL;
    int rc = ar_ojson_parse(job, strlen(job), "/jobs/j-1", &j, err, sizeof err);
    CHECK(rc == 0 && j, "parse: %s", err);
    if (j) {
        CHECK(ar_ojson_text(j, "State", out, sizeof out, err, sizeof err) == 0 &&
                  strcmp(out, "Failure") == 0, "State: %s", out);
        CHECK(ar_ojson_text(j, "Progress", out, sizeof out, err, sizeof err) == 0 &&
                  strcmp(out, "40") == 0, "integer: %s", out);
        CHECK(ar_ojson_text(j, "Ratio", out, sizeof out, err, sizeof err) == 0 &&
                  strcmp(out, "2") == 0, "integral real: %s", out);
        CHECK(ar_ojson_text(j, "Ok", out, sizeof out, err, sizeof err) == 0 &&
                  strcmp(out, "false") == 0, "boolean: %s", out);
        CHECK(ar_ojson_text(j, "Content.Description", out, sizeof out, err, sizeof err) == 0 &&
                  strcmp(out, "x") == 0, "dotted: %s", out);
        CHECK(ar_ojson_text(j, "Content.List.1", out, sizeof out, err, sizeof err) == 0 &&
                  strcmp(out, "b") == 0, "list index: %s", out);
        CHECK(ar_ojson_text(j, "Null", out, sizeof out, err, sizeof err) == AR_ENOTFOUND,
              "null is absent");
        CHECK(ar_ojson_text(j, "Nope.Deeper", out, sizeof out, err, sizeof err) == AR_ENOTFOUND &&
                  has(err, "Nope.Deeper"), "absent path named: %s", err);
        CHECK(ar_ojson_text(j, "Content", out, 4, err, sizeof err) == AR_ERR, "too long refused");
        ar_ojson_free(j);
    }
    CHECK(ar_ojson_get("{\"Last\": 17}", 12, "Last", out, sizeof out, err, sizeof err) == 0 &&
              strcmp(out, "17") == 0, "one-shot get: %s", out);
    CHECK(ar_ojson_get("{\"Last\": 1", 10, "Last", out, sizeof out, err, sizeof err) == AR_ENET,
          "garbled one-shot");

    char **items = NULL;
    size_t n = 0;
    const char *ids = "[\"a\",{\"ID\":\"b\"},\"c\"]";
    rc = ar_ojson_list(ids, strlen(ids), "", &items, &n, err, sizeof err);
    CHECK(rc == 0 && n == 3 && strcmp(items[1], "b") == 0 && items[3] == NULL, "list: %s", err);
    free(items);
    rc = ar_ojson_list("[1]", 3, "", &items, &n, err, sizeof err);
    CHECK(rc == AR_ERR && items == NULL, "a number is not an id");

    char *q = NULL;
    CHECK(ar_json_quote("a\"b\\c\n\x01\xff\xc3\xa9", &q, err, sizeof err) == 0 && q &&
              strcmp(q, "\"a\\\"b\\\\c\\n\\u0001\\ufffd\xc3\xa9\"") == 0,
          "quote: %s", q ? q : "(null)");
    free(q);
}

int main(void)
{
    const char *src = getenv("AR_SOURCE_DIR");
    snprintf(datadir, sizeof datadir, "%s/tests/unit/data", src && *src ? src : ".");
    test_changes();
    test_fields();
    return tap_done();
}
