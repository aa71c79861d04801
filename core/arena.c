/* arena.c - see arena.h. */
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

#define CHUNK (64 * 1024)

struct ar_arena_chunk {
    ar_arena_chunk *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
};

static void *take(ar_arena *a, size_t n, size_t align)
{
    ar_arena_chunk *c = a->head;
    size_t at;

    n = n ? n : 1;
    if (n > ((size_t)-1) / 2)
        return NULL;
    at = c ? (c->used + align - 1) & ~(align - 1) : 0;
    if (!c || at + n > c->cap) {
        size_t cap = n > CHUNK / 4 ? n : CHUNK;
        ar_arena_chunk *nc = malloc(sizeof *nc + cap);
        if (!nc)
            return NULL;
        nc->used = 0;
        nc->cap = cap;
        a->bytes += sizeof *nc + cap;
        if (c && cap != CHUNK) {
            /* a big piece: keep filling the current chunk afterwards */
            nc->next = c->next;
            c->next = nc;
            nc->used = n;
            return nc->data;
        }
        nc->next = c;
        a->head = c = nc;
        at = 0;
    }
    c->used = at + n;
    return c->data + at;
}

void *ar_arena_alloc(ar_arena *a, size_t n)
{
    return take(a, n, alignof(max_align_t));
}

char *ar_arena_strndup(ar_arena *a, const char *s, size_t len)
{
    char *p = len + 1 > len ? take(a, len + 1, 1) : NULL; /* text needs no alignment */
    if (!p)
        return NULL;
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void ar_arena_free(ar_arena *a)
{
    ar_arena_chunk *c = a->head;
    while (c) {
        ar_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->bytes = 0;
}
