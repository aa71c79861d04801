/* jsonq.h - read one value out of a small JSON answer (lua-cjson inside).
 *
 * For the daemon's few non-rule answers (job ids, job states, /system,
 * /changes?last): decode with cjson in a short-lived Lua state and return the
 * value at a dotted path ("Content.Description", "Last") as text.  Numbers
 * are printed as integers when integral, booleans as "true"/"false".
 * Malformed JSON or a missing path is an error naming the path; nothing here
 * can crash on hostile input.
 */
#ifndef AR_JSONQ_H
#define AR_JSONQ_H

#include <stddef.h>

int ar_jsonq_get(const char *body, size_t len, const char *path, char *out, size_t outlen,
                 char *err, size_t errlen);

/* The list of strings at path ("" = the top level), or of the "ID" fields
 * of a list of objects.  *items is one malloc'ed block (free(*items)),
 * NULL-terminated. */
int ar_jsonq_list(const char *body, size_t len, const char *path, char ***items, size_t *n,
                  char *err, size_t errlen);

/* JSON string literal of s (quotes included), via cjson.encode.  *out malloc'ed. */
int ar_jsonq_quote(const char *s, char **out, char *err, size_t errlen);

#endif
