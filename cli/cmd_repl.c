/* cmd_repl.c - placeholder */
#include "app.h"
int ar_cmd_repl(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return AR_EXIT_USAGE;
}
