/* dirsig.h - a cheap fingerprint of a folder's entries, to notice rule edits.
 *
 * Hashes (name, size, mtime with nanoseconds, inode) of every regular file
 * directly in `dir` whose name ends in one of the given suffixes.  Two calls
 * give the same value iff nothing relevant was added, removed or modified
 * (modulo hash collisions).  A missing folder has its own distinct value.
 */
#ifndef AR_DIRSIG_H
#define AR_DIRSIG_H

#include <stdint.h>

/* suffixes: NULL-terminated list, e.g. {".json", ".lua", NULL}. */
uint64_t ar_dirsig(const char *dir, const char *const *suffixes);

#endif
