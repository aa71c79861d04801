/* fuzz_sanitize.c - libFuzzer target for ar_sanitize_component (core/sanitize.h).
 *
 * Input: byte 0 picks max_bytes (1..255, or 256..1000 to test the clamp to
 * AR_NAME_MAX), byte 1 picks the fallback (NULL, a safe one, "", ".", "..",
 * or a slice of the input itself), the rest is the tag value.  Every output
 * must keep the header's promises: valid UTF-8, at most max_bytes bytes
 * (<= 255), no '/', '\\', NUL, control characters (C0, DEL, and the C1 range
 * sanitize.c documents), none of  < > : " | ? *, never "", "." or "..", no
 * leading space, no trailing space or dot, no ".WORKING" ending, and the
 * same answer every time.  A broken promise aborts (the fuzzer reports it).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sanitize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *out, size_t n)
{
    fprintf(stderr, "fuzz_sanitize: broken promise: %s; output (%zu bytes):", what, n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %02x", (unsigned char)out[i]);
    fputc('\n', stderr);
    abort();
}

/* Length of the well-formed UTF-8 sequence at s (n bytes left), 0 if none.
 * Written from RFC 3629's table, independently of sanitize.c. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (s[0] == 0xE0 && s[1] < 0xA0)
            return 0; /* overlong */
        if (s[0] == 0xED && s[1] > 0x9F)
            return 0; /* surrogate */
        return 3;
    }
    if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (s[0] == 0xF0 && s[1] < 0x90)
            return 0; /* overlong */
        if (s[0] == 0xF4 && s[1] > 0x8F)
            return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

static void check(const char *out, size_t n, size_t max_bytes)
{
    size_t limit = max_bytes > AR_NAME_MAX ? AR_NAME_MAX : max_bytes;
    const unsigned char *u = (const unsigned char *)out;

    if (strlen(out) != n)
        fail("returned length differs from the string's", out, n);
    if (n == 0)
        fail("empty result", out, n);
    if (n > limit)
        fail("longer than max_bytes", out, n);
    if (strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        fail("\".\" or \"..\"", out, n);
    if (out[0] == ' ')
        fail("leading space", out, n);
    if (out[n - 1] == ' ' || out[n - 1] == '.')
        fail("trailing space or dot", out, n);
    if (n >= 8 && memcmp(out + n - 8, ".WORKING", 8) == 0)
        fail("ends with .WORKING", out, n);
    for (size_t i = 0; i < n;) {
        size_t len = utf8_len(u + i, n - i);
        if (len == 0)
            fail("invalid UTF-8", out, n);
        if (len == 1 && (u[i] < 0x20 || u[i] == 0x7f || strchr("/\\<>:\"|?*", u[i])))
            fail("forbidden ASCII character", out, n);
        if (len == 2 && u[i] == 0xC2 && u[i + 1] < 0xA0)
            fail("C1 control character", out, n);
        i += len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const fallbacks[] = {NULL, "UNKNOWN", "", ".", "..", " . ", "NoPID"};
    const size_t nfallbacks = sizeof fallbacks / sizeof fallbacks[0];
    char *fb_copy = NULL;
    const char *fallback;
    size_t max_bytes;

    if (size < 2)
        return 0;
    max_bytes = data[0] == 0xFF ? 256 + (size_t)data[1] * 3 : 1 + (size_t)data[0];
    if (data[1] % 8 < nfallbacks) {
        fallback = fallbacks[data[1] % 8];
    } else {
        /* the first few bytes of the value as the fallback (NUL-terminated) */
        size_t flen = size - 2 < 16 ? size - 2 : 16;
        fb_copy = malloc(flen + 1);
        if (!fb_copy)
            return 0;
        memcpy(fb_copy, data + 2, flen);
        fb_copy[flen] = '\0';
        fallback = fb_copy;
    }
    const char *in = (const char *)data + 2;
    size_t inlen = size - 2;

    /* exactly max_bytes + 1, as the header asks: ASan sees any overrun */
    char *out = malloc(max_bytes + 1);
    char *again = malloc(max_bytes + 1);
    if (!out || !again)
        goto done;
    size_t n = ar_sanitize_component(in, inlen, fallback, out, max_bytes);
    check(out, n, max_bytes);
    size_t n2 = ar_sanitize_component(in, inlen, fallback, again, max_bytes);
    if (n2 != n || memcmp(out, again, n + 1) != 0)
        fail("not deterministic", again, n2);
done:
    free(out);
    free(again);
    free(fb_copy);
    return 0;
}
