/* signals.c - SIGINT/SIGTERM ask the daemon to stop, SIGHUP to reload.
 * Handlers only set flags; no SA_RESTART so sleeps wake up at once. */
#include <signal.h>
#include <string.h>

#include "app.h"

static volatile sig_atomic_t g_stop, g_reload;

static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void on_hup(int sig)
{
    (void)sig;
    g_reload = 1;
}

void ar_signals_install(ar_app *a)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    a->stop = &g_stop;
    a->reload = &g_reload;
}
