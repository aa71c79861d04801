/* lalloc.c - the engine's lua_Alloc: counts every byte the Lua state holds
 * and refuses to grow past a cap.
 *
 * A refused allocation returns NULL; Lua then runs an emergency full
 * collection, retries once, and raises "not enough memory" in the code that
 * asked.  The state stays usable: the error unwinds to the nearest pcall
 * (the door, or a rule's own pcall, after which the budget still applies).
 * Shrinking and freeing always succeed, even when over the cap.  `failed`
 * counts the requests that stayed refused after that collection (each one
 * raised an error), so the door can tell a rule that caught its own memory
 * error from one that never hit the cap.
 */
#include <stdlib.h>

#include "engine_int.h"

void *ar_lalloc_fn(void *ud, void *ptr, size_t osize, size_t nsize)
{
    ar_lalloc *a = ud;
    /* When ptr is NULL, osize is a type tag, not a size. */
    size_t old = ptr ? osize : 0;
    void *p;

    if (nsize == 0) {
        free(ptr);
        a->used -= old;
        return NULL;
    }
    if (nsize > old && a->cap) {
        size_t grow = nsize - old;
        if (a->used >= a->cap || grow > a->cap - a->used) {
            /* Lua retries a refused request once, after a full collection;
             * the same request refused twice is a real failure. */
            if (a->refused && a->last_ptr == ptr && a->last_osize == osize &&
                a->last_nsize == nsize)
                a->failed++;
            a->refused++;
            a->last_ptr = ptr;
            a->last_osize = osize;
            a->last_nsize = nsize;
            return NULL;
        }
    }
    p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    a->used = a->used - old + nsize;
    if (a->used > a->peak)
        a->peak = a->used;
    return p;
}
