/* cmd_repl.c - `autorthanc repl`: the interactive prompt of the rule
 * workbench (the Lua side is bindings/repl.c + rules/repl.lua).
 *
 * Follows Lua's lua.c: prompt "> ", continuation ">> " while a chunk is
 * unfinished, values printed, errors printed and the prompt goes on.  On a
 * terminal, with readline (AR_HAVE_READLINE), line editing and history
 * (~/.autorthanc_history) through readline's callback interface, so that
 * Ctrl-C at the prompt drops the line being typed; otherwise a plain line
 * loop that still prints the prompts, so scripts can drive it through a
 * pipe.  SIGINT while a chunk runs sets the engine's interrupt flag: the
 * budget's count hook stops the chunk ("interrupted") and the REPL goes on.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#ifdef AR_HAVE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

#include "../bindings/repl.h"
#include "../core/err.h"
#include "app.h"
#include "toolkit.h"

static const char repl_usage[] =
    "usage: autorthanc repl [--config FILE] [--fixture FILE]\n"
    "\n"
    "An interactive Lua prompt in the rules' sandbox, connected to the configured\n"
    "Orthanc, with the rules of the rules folder loaded.  Built-ins: studies{...},\n"
    "study(id_or_uid), rules(), rule(name), try(rule, study), name(rule, study),\n"
    "reload(), help().  --fixture FILE (from `autorthanc snapshot`) is the current\n"
    "study from the start and needs no Orthanc.  Reads a script from a pipe too.\n";

static volatile sig_atomic_t g_intr;

static void on_sigint(int sig)
{
    (void)sig;
    g_intr = 1;
}

static void rule_print(void *ud, const char *rule, const char *line)
{
    (void)ud;
    printf("[%s] %s\n", rule ? rule : "rule", line);
    fflush(stdout);
}

/* ---- reading lines ------------------------------------------------------------ */

#ifdef AR_HAVE_READLINE
static char *rl_got;
static int rl_ready;

static void on_line(char *line)
{
    rl_got = line;
    rl_ready = 1;
    rl_callback_handler_remove();
}

/* NULL at end of input; *canceled when Ctrl-C dropped the line. */
static char *read_rl(const char *prompt, int *canceled)
{
    sigset_t block, open_mask;

    /* SIGINT stays blocked except inside pselect, so a Ctrl-C that lands
     * while readline handles a key is seen at the next pselect, not lost */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &open_mask);
    sigdelset(&open_mask, SIGINT);
    rl_ready = 0;
    rl_got = NULL;
    rl_callback_handler_install(prompt, on_line);
    while (!rl_ready) {
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(STDIN_FILENO, &fds);
        int n = g_intr ? -1 : pselect(STDIN_FILENO + 1, &fds, NULL, NULL, NULL, &open_mask);
        if (n < 0 && g_intr)
            errno = EINTR;
        if (n < 0) {
            if (errno == EINTR && g_intr) {
                g_intr = 0;
                rl_free_line_state();
                rl_callback_sigcleanup();
                rl_replace_line("", 0);
                rl_callback_handler_remove();
                fputs("^C\n", stdout);
                fflush(stdout);
                *canceled = 1;
                sigprocmask(SIG_UNBLOCK, &block, NULL);
                return NULL;
            }
            if (errno == EINTR)
                continue;
            rl_callback_handler_remove();
            sigprocmask(SIG_UNBLOCK, &block, NULL);
            return NULL;
        }
        rl_callback_read_char();
    }
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    if (rl_got && *rl_got)
        add_history(rl_got);
    return rl_got;
}
#endif

static char *read_plain(const char *prompt, int *canceled)
{
    char *line = NULL;
    size_t cap = 0;

    fputs(prompt, stdout);
    fflush(stdout);
    for (;;) {
        errno = 0;
        if (g_intr)
            errno = EINTR; /* Ctrl-C came between two reads */
        else if (getline(&line, &cap, stdin) >= 0)
            return line;
        clearerr(stdin);
        if (errno == EINTR && g_intr) {
            g_intr = 0;
            fputs("^C\n", stdout);
            *canceled = 1;
            free(line);
            return NULL;
        }
        if (errno != EINTR) {
            free(line);
            return NULL;
        }
    }
}

int ar_cmd_repl(int argc, char **argv)
{
    const char *config = NULL, *fixture_path = NULL;
    char err[2048] = "", history[AR_PATH_LEN + 32] = "";
    char *fixture = NULL;
    size_t fixture_len = 0;
    ar_repl *r = NULL;
    int code = AR_EXIT_USAGE, use_rl = 0;
    ar_app a;

    memset(&a, 0, sizeof a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            fputs(repl_usage, stdout);
            return AR_EXIT_OK;
        } else if ((!strcmp(s, "--config") || !strcmp(s, "-c") || !strcmp(s, "--fixture")) &&
                   i + 1 >= argc) {
            fprintf(stderr, "autorthanc repl: %s needs a value\n%s", s, repl_usage);
            return AR_EXIT_USAGE;
        } else if (!strcmp(s, "--config") || !strcmp(s, "-c")) {
            config = argv[++i];
        } else if (!strncmp(s, "--config=", 9)) {
            config = s + 9;
        } else if (!strcmp(s, "--fixture")) {
            fixture_path = argv[++i];
        } else if (!strncmp(s, "--fixture=", 10)) {
            fixture_path = s + 10;
        } else {
            fprintf(stderr, "autorthanc repl: unexpected argument '%s'\n%s", s, repl_usage);
            return AR_EXIT_USAGE;
        }
    }
    if ((code = ar_app_config(&a, config)))
        return code;
    code = AR_EXIT_USAGE;
    if (fixture_path && ar_tool_read_file(fixture_path, &fixture, &fixture_len, err, sizeof err)) {
        fprintf(stderr, "autorthanc repl: %s\n", err);
        goto out;
    }
    if (ar_app_open_engine(&a) || ar_app_open_http(&a))
        goto out;
    if (ar_tool_open_state_if_any(&a, err, sizeof err)) {
        fprintf(stderr, "autorthanc repl: %s\n", err);
        goto out;
    }
    ar_engine_set_print(a.engine, rule_print, NULL);
    ar_engine_set_interrupt(a.engine, &g_intr);
    if (ar_engine_load_rules_dir(a.engine, a.cfg.rules_dir, err, sizeof err))
        printf("warning: %s (reload() tries again)\n", err);

    ar_repl_opts ro = {
        .http = a.http,
        .state = a.state,
        .rules_dir = a.cfg.rules_dir,
        .fixture = fixture,
        .fixture_len = fixture_len,
        .fixture_name = fixture_path,
        .out = stdout,
    };
    if (ar_repl_new(a.engine, &ro, &r, err, sizeof err)) {
        fprintf(stderr, "autorthanc repl: %s\n", err);
        goto out;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_sigint; /* no SA_RESTART: a read at the prompt wakes up */
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    size_t n = ar_engine_rule_count(a.engine), broken = 0;
    for (size_t i = 0; i < n; i++)
        broken += !ar_engine_rule(a.engine, i)->ok;
    printf("autorthanc %s repl: %zu rule(s) from %s (%zu broken), ", AR_VERSION, n,
           a.cfg.rules_dir, broken);
    if (fixture_path)
        printf("study from %s", fixture_path);
    else
        printf("Orthanc %s", a.cfg.orthanc_url);
    printf(".  help() lists the built-ins.\n");
    fflush(stdout);

#ifdef AR_HAVE_READLINE
    use_rl = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    if (use_rl) {
        const char *home = getenv("HOME");
        rl_readline_name = "autorthanc";
        rl_catch_signals = 0;
        rl_catch_sigwinch = 0;
        rl_variable_bind("enable-bracketed-paste", "off");
        if (home && *home) {
            snprintf(history, sizeof history, "%s/.autorthanc_history", home);
            read_history(history);
        }
    }
#endif
    int more = 0;
    for (;;) {
        const char *prompt = more ? ">> " : "> ";
        int canceled = 0;
        char *line;
#ifdef AR_HAVE_READLINE
        line = use_rl ? read_rl(prompt, &canceled) : read_plain(prompt, &canceled);
#else
        line = read_plain(prompt, &canceled);
#endif
        if (canceled) {
            ar_repl_reset(r);
            more = 0;
            continue;
        }
        if (!line) {
            fputs("\n", stdout);
            break;
        }
        g_intr = 0;
        more = ar_repl_feed(r, line) == AR_REPL_MORE;
        g_intr = 0;
        free(line);
    }
#ifdef AR_HAVE_READLINE
    if (use_rl && history[0])
        write_history(history);
#endif
    (void)use_rl;
    (void)history;
    code = AR_EXIT_OK;
out:
    ar_repl_free(r);
    free(fixture);
    ar_app_close(&a);
    return code;
}
