/* budget.c - bound every call into a rule by instructions and wall clock.
 *
 * A count hook fires every AR_HOOK_STEP VM instructions, adds them to the
 * call's count and checks the deadline.  Once over either limit it records
 * where, re-arms itself to fire on EVERY instruction and raises an error;
 * each later instruction raises again, so a rule that catches the error with
 * its own pcall/xpcall is stopped at its next instruction, until the call
 * returns to C (ar_budget_disarm).  C functions (string.rep, patterns) run to
 * their end: memory is bounded by the allocator, not here.  An interrupt
 * flag (ar_engine_set_interrupt, SIGINT in the REPL) stops the call the same
 * way.
 */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "engine_int.h"

#define AR_HOOK_STEP 1000

static void now_mono(struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
}

static int past(const struct timespec *deadline)
{
    struct timespec ts;
    now_mono(&ts);
    return ts.tv_sec > deadline->tv_sec ||
           (ts.tv_sec == deadline->tv_sec && ts.tv_nsec >= deadline->tv_nsec);
}

/* Where the stop happened: the innermost frame of a rule file ("@..."
 * chunks), else the running function. */
static void note_where(lua_State *L, lua_Debug *ar, ar_budget *b)
{
    lua_Debug up;
    int level;

    b->where[0] = '\0';
    for (level = 0; lua_getstack(L, level, &up); level++) {
        if (lua_getinfo(L, "Sl", &up) && up.source[0] == '@' && up.currentline > 0) {
            snprintf(b->where, sizeof b->where, "%s:%d", up.short_src, up.currentline);
            return;
        }
    }
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
        snprintf(b->where, sizeof b->where, "%s:%d", ar->short_src, ar->currentline);
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    ar_budget *b = &ar_engine_of(L)->budget;

    if (b->tripped == AR_BUDGET_OK) {
        b->used += AR_HOOK_STEP;
        if (b->interrupt && *b->interrupt)
            b->tripped = AR_BUDGET_INTR;
        else if (b->used >= b->limit)
            b->tripped = AR_BUDGET_INSNS;
        else if (past(&b->deadline))
            b->tripped = AR_BUDGET_TIME;
        else
            return;
        note_where(L, ar, b);
        /* From now on: every instruction, until the call returns to C. */
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    }
    lua_pushstring(L, b->tripped == AR_BUDGET_INSNS  ? "exceeded instruction budget"
                      : b->tripped == AR_BUDGET_INTR ? "interrupted"
                                                     : "timeout");
    lua_error(L);
}

/* Restart the count and the clock of the running call (unless it already
 * tripped: a stop stays a stop). */
static void renew(ar_budget *b)
{
    long ms = b->timeout_ms;
    if (b->tripped != AR_BUDGET_OK)
        return;
    b->used = 0;
    now_mono(&b->deadline);
    b->deadline.tv_sec += ms / 1000;
    b->deadline.tv_nsec += (ms % 1000) * 1000000L;
    if (b->deadline.tv_nsec >= 1000000000L) {
        b->deadline.tv_sec++;
        b->deadline.tv_nsec -= 1000000000L;
    }
}

/* M.c.renew_budget(): host code (rules/layout.lua) gives each hook call of
 * a plan its own budget.  Never reachable from a rule's sandbox. */
static int l_renew_budget(lua_State *L)
{
    renew(&ar_engine_of(L)->budget);
    return 0;
}

void ar_budget_register(lua_State *L, int t)
{
    t = lua_absindex(L, t);
    lua_pushcfunction(L, l_renew_budget);
    lua_setfield(L, t, "renew_budget");
}

void ar_budget_arm(lua_State *L, ar_budget *b)
{
    b->tripped = AR_BUDGET_OK;
    b->where[0] = '\0';
    renew(b); /* count from zero, deadline from now */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, AR_HOOK_STEP);
}

int ar_budget_disarm(lua_State *L, ar_budget *b)
{
    int tripped = b->tripped;
    lua_sethook(L, NULL, 0, 0);
    b->tripped = AR_BUDGET_OK;
    return tripped;
}

void ar_budget_message(const ar_budget *b, int tripped, char *out, size_t outlen)
{
    const char *at = b->where[0] ? " at " : "";
    if (tripped == AR_BUDGET_INSNS)
        snprintf(out, outlen, "exceeded instruction budget (%lld instructions)%s%s",
                 b->limit, at, b->where);
    else if (tripped == AR_BUDGET_INTR)
        snprintf(out, outlen, "interrupted%s%s", at, b->where);
    else
        snprintf(out, outlen, "timeout (%ld ms)%s%s", b->timeout_ms, at, b->where);
}
