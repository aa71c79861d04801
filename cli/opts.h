/* opts.h - tiny option scanner shared by the subcommands.
 * Recognises --config FILE / --config=FILE, --help, and flags listed by the
 * caller; everything else is a positional argument or an error. */
#ifndef AR_OPTS_H
#define AR_OPTS_H

typedef struct ar_opts {
    const char *config;
    int help;
    const char *flags[8];   /* in: accepted flags ("--once") */
    int set[8];             /* out: 1 when given */
    const char *pos[64];    /* out: positional arguments */
    int npos;
} ar_opts;

/* Returns 0, or 2 after printing an error naming the bad option. */
int ar_opts_parse(ar_opts *o, int argc, char **argv, const char *cmd_usage);
int ar_opts_has(const ar_opts *o, const char *flag);

#endif
