/* sanitize.c - see sanitize.h.
 *
 * The work happens in one forward pass over the input:
 *   1. raw trailing DICOM padding (spaces and NULs) is dropped;
 *   2. the rest is decoded as UTF-8; each code point is copied or replaced
 *      by '_' (forbidden ASCII, C0/C1 controls, DEL); each byte that is not
 *      part of a well-formed sequence (overlong, surrogate, > U+10FFFF,
 *      truncated, stray continuation) becomes one '_';
 *   3. leading spaces are skipped; copying stops at the first code point
 *      that would not fit in max_bytes, so the cut is on a UTF-8 boundary;
 *   4. trailing spaces and dots are trimmed (after the cut, so the cut can
 *      not expose one);
 *   5. a name ending in ".WORKING" gets that '.' turned into '_', so user
 *      data can never look like an export in progress;
 *   6. "", "." and ".." are replaced by the fallback (itself sanitised, and
 *      "_" if even that comes out empty).
 */
#include "sanitize.h"

#include <string.h>

#define WORKING_SUFFIX ".WORKING"

/* Length of the well-formed UTF-8 sequence starting at s[0] (n bytes
 * available), or 0 when s[0] does not start one. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t len, i;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;          /* no overlongs */
        else if (c == 0xED)
            hi = 0x9F;          /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;          /* no overlongs */
        else if (c == 0xF4)
            hi = 0x8F;          /* nothing above U+10FFFF */
    } else
        return 0;               /* 0x80..0xC1, 0xF5..0xFF */

    if (n < len)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

static int forbidden_ascii(unsigned char c)
{
    if (c < 0x20 || c == 0x7f)
        return 1;
    switch (c) {
    case '/': case '\\': case '<': case '>': case ':':
    case '"': case '|': case '?': case '*':
        return 1;
    default:
        return 0;
    }
}

/* Steps 1-5.  Returns the length written into out (< cap guaranteed). */
static size_t clean(const unsigned char *in, size_t inlen, char *out, size_t max_bytes)
{
    size_t i = 0, o = 0;
    size_t wl = sizeof(WORKING_SUFFIX) - 1;

    while (inlen > 0 && (in[inlen - 1] == ' ' || in[inlen - 1] == '\0'))
        inlen--;

    while (i < inlen) {
        size_t len = utf8_seq_len(in + i, inlen - i);
        const unsigned char *src = in + i;
        unsigned char repl = '_';

        if (len == 0) {
            src = &repl;        /* one bad byte -> one '_' */
            len = 1;
            i += 1;
        } else {
            i += len;
            if (len == 1 && forbidden_ascii(src[0]))
                src = &repl;
            else if (len == 2 && src[0] == 0xC2 && src[1] < 0xA0) {
                src = &repl;    /* C1 control U+0080..U+009F */
                len = 1;
            }
        }
        if (o == 0 && len == 1 && src[0] == ' ')
            continue;           /* leading space */
        if (o + len > max_bytes)
            break;              /* cut on a code point boundary */
        memcpy(out + o, src, len);
        o += len;
    }

    while (o > 0 && (out[o - 1] == ' ' || out[o - 1] == '.'))
        o--;
    out[o] = '\0';

    if (o >= wl && memcmp(out + o - wl, WORKING_SUFFIX, wl) == 0)
        out[o - wl] = '_';
    return o;
}

size_t ar_sanitize_component(const char *in, size_t inlen, const char *fallback,
                             char *out, size_t max_bytes)
{
    size_t n;

    if (!out)
        return 0;
    if (max_bytes > AR_NAME_MAX)
        max_bytes = AR_NAME_MAX;
    if (max_bytes == 0) {
        out[0] = '\0';
        return 0;
    }
    if (!in)
        inlen = 0;

    n = clean((const unsigned char *)in, inlen, out, max_bytes);
    if (n > 0 && strcmp(out, ".") != 0 && strcmp(out, "..") != 0)
        return n;

    /* Trailing dots are trimmed, so "." and ".." cannot survive clean();
     * the checks above only document the promise. */
    if (fallback)
        n = clean((const unsigned char *)fallback, strlen(fallback), out, max_bytes);
    else
        n = 0;
    if (n == 0) {
        out[0] = '_';
        out[1] = '\0';
        n = 1;
    }
    return n;
}
