/* arena.h - a bump allocator for many small strings that die together.
 *
 * A study snapshot (core/snapshot.c) or an export plan (bindings/plan.c)
 * holds 100,000s of short strings (ids, tag values, file names) for one
 * lifetime: one malloc each would cost more in headers than in text.  An
 * arena hands out pieces of 64 KB chunks (a bigger piece gets a chunk of
 * its own); pointers stay valid until ar_arena_free, which frees them all.
 * `bytes` is what the arena holds from malloc (chunks + headers), for
 * memory caps.  Zero-initialised is empty and ready.
 */
#ifndef AR_ARENA_H
#define AR_ARENA_H

#include <stddef.h>

typedef struct ar_arena_chunk ar_arena_chunk;

typedef struct ar_arena {
    ar_arena_chunk *head;    /* the chunk being filled (newest first) */
    size_t bytes;            /* held from malloc */
} ar_arena;

/* n bytes aligned for any object, or NULL when out of memory. */
void *ar_arena_alloc(ar_arena *a, size_t n);
/* A NUL-terminated copy of s[0..len), or NULL when out of memory. */
char *ar_arena_strndup(ar_arena *a, const char *s, size_t len);
void ar_arena_free(ar_arena *a);

#endif
