/* sanitize.h - turn an untrusted tag value into one safe path component.
 *
 * The result:
 *  - is valid UTF-8 (invalid bytes become '_'), non-Latin text kept readable;
 *  - has no '/', '\\', NUL, control characters (< 0x20, 0x7f), nor the
 *    characters that break SMB/Windows shares  < > : " | ? *  (each -> '_');
 *  - is trimmed of DICOM padding (spaces, NUL) and of leading/trailing
 *    spaces and trailing dots;
 *  - is never "", "." or ".." (then `fallback` is used, which must be safe);
 *  - is at most `max_bytes` bytes (<= 255), cut on a UTF-8 boundary.
 * Deterministic and total: every input gives a safe output.
 */
#ifndef AR_SANITIZE_H
#define AR_SANITIZE_H

#include <stddef.h>

#define AR_NAME_MAX 255

/* The last component of an export folder leaves room for what is added
 * beside it: a collision suffix "~xxxxxxxx-NN" (core/state.c) and
 * ".OLD.WORKING" (core/export.c). */
#define AR_FOLDER_NAME_MAX (AR_NAME_MAX - 12 - 12)

/* in/inlen: raw bytes (may contain NUL).  out must hold max_bytes+1.
 * Returns the length written. */
size_t ar_sanitize_component(const char *in, size_t inlen, const char *fallback,
                             char *out, size_t max_bytes);

#endif
