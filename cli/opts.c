/* opts.c - see opts.h */
#include "opts.h"

#include <stdio.h>
#include <string.h>

int ar_opts_parse(ar_opts *o, int argc, char **argv, const char *cmd_usage)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            o->help = 1;
            fputs(cmd_usage, stdout);
            return 0;
        }
        if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "autorthanc %s: --config needs a file\n%s", argv[0], cmd_usage);
                return 2;
            }
            o->config = argv[++i];
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0) {
            o->config = a + 9;
            continue;
        }
        int known = 0;
        for (int f = 0; f < 8 && o->flags[f]; f++)
            if (strcmp(a, o->flags[f]) == 0) {
                o->set[f] = 1;
                known = 1;
            }
        if (known)
            continue;
        if (a[0] == '-' && a[1]) {
            fprintf(stderr, "autorthanc %s: unknown option '%s'\n%s", argv[0], a, cmd_usage);
            return 2;
        }
        if (o->npos < 64)
            o->pos[o->npos++] = a;
    }
    return 0;
}

int ar_opts_has(const ar_opts *o, const char *flag)
{
    for (int f = 0; f < 8 && o->flags[f]; f++)
        if (strcmp(o->flags[f], flag) == 0)
            return o->set[f];
    return 0;
}
