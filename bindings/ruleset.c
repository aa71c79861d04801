/* ruleset.c - the texts of a set of rules, as one immutable value.
 *
 * When the engine loads rule files it records every text it read (each rule
 * file and each naming hook file, by path) into a rule set; another engine
 * loads the same rules from that set without touching the disk, so every
 * thread runs exactly the rules the watcher decided with, whatever happens
 * to the folder meanwhile.  A set is shared by reference count (atomic):
 * made by one thread, read by many, freed by the last.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "engine_int.h"

typedef struct rs_file {
    char *path;
    char *text;          /* NUL-terminated */
    size_t len;
    int rule;            /* 1: a rule file (in load order), 0: a hook file */
} rs_file;

struct ar_ruleset {
    atomic_int refs;
    rs_file *f;
    size_t n, cap;
};

int ar_ruleset_new(ar_ruleset **out)
{
    ar_ruleset *s = calloc(1, sizeof *s);
    *out = s;
    if (!s)
        return AR_ENOMEM;
    atomic_init(&s->refs, 1);
    return AR_OK;
}

ar_ruleset *ar_ruleset_ref(ar_ruleset *s)
{
    if (s)
        atomic_fetch_add(&s->refs, 1);
    return s;
}

void ar_ruleset_free(ar_ruleset *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->f[i].path);
        free(s->f[i].text);
    }
    free(s->f);
    free(s);
}

int ar_ruleset_add(ar_ruleset *s, const char *path, const char *text, size_t len, int rule)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        rs_file *v = realloc(s->f, cap * sizeof *v);
        if (!v)
            return AR_ENOMEM;
        s->f = v;
        s->cap = cap;
    }
    rs_file *x = &s->f[s->n];
    x->path = strdup(path);
    x->text = malloc(len + 1);
    if (!x->path || !x->text) {
        free(x->path);
        free(x->text);
        return AR_ENOMEM;
    }
    memcpy(x->text, text, len);
    x->text[len] = 0;
    x->len = len;
    x->rule = rule;
    s->n++;
    return AR_OK;
}

const char *ar_ruleset_text(const ar_ruleset *s, const char *path, size_t *len)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->f[i].path, path) == 0) {
            *len = s->f[i].len;
            return s->f[i].text;
        }
    return NULL;
}

size_t ar_ruleset_rules(const ar_ruleset *s, const char **paths, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->f[i].rule) {
            if (paths && k < max)
                paths[k] = s->f[i].path;
            k++;
        }
    return k;
}
