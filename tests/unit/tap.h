/* tap.h - minimal test helpers for the unit tests (TAP-like output).
 * CHECK(cond, fmt, ...) records a failure and goes on; tap_done() returns the
 * process exit code and prints "N passed, N failed". */
#ifndef AR_TAP_H
#define AR_TAP_H

void tap_check(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int tap_done(void);

#define CHECK(cond, ...) tap_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define CHECK_STR(a, b) do { const char *a_ = (a), *b_ = (b); \
    tap_check(a_ && b_ && strcmp(a_, b_) == 0, __FILE__, __LINE__, \
              "%s == %s (got '%s', want '%s')", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)
#define CHECK_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
    tap_check(a_ == b_, __FILE__, __LINE__, "%s == %s (got %lld, want %lld)", #a, #b, a_, b_); } while (0)

#endif
