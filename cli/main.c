/* main.c - autorthanc's command line: dispatch to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "app.h"

static const char usage[] =
    "usage: autorthanc [--version] [--help] COMMAND [ARGS]\n"
    "\n"
    "Watch an Orthanc server and export or forward stable studies that match rules.\n"
    "\n"
    "commands:\n"
    "  run [--config FILE] [--once]     watch Orthanc and act on stable studies\n"
    "  check [--config FILE] [--emit-lua] [RULE_FILE...]\n"
    "                                   load and compile rules, report each one\n"
    "  jobs [--config FILE] [--failed]  list the job ledger\n"
    "  retry [--config FILE] (JOB|--all) requeue failed jobs\n"
    "  status [--config FILE] [--json]  Orthanc reachability, position, rules, jobs\n"
    "\n"
    "trying rules before they go live:\n"
    "  repl [--config FILE] [--fixture FILE]\n"
    "                                   interactive Lua prompt in the rule sandbox\n"
    "  test RULE (STUDY | --fixture FILE)... [--expect-no-match]\n"
    "                                   dry run: verdict, reason and target folder\n"
    "  test --cases DIR [FILTER]        run a folder of rule cases\n"
    "  snapshot STUDY [--instances]     print a study as a fixture (JSON)\n"
    "  backtest [RULE...] [--since DATE] [--list]\n"
    "                                   what the rules would take from the archive\n"
    "  fire STUDY [--rule NAME]         run the matching rules' actions on a study now\n"
    "\n"
    "Configuration: --config FILE or $AUTORTHANC_CONFIG (YAML), overridden by\n"
    "AUTORTHANC_* environment variables. See README.md.\n"
    "`autorthanc COMMAND --help` describes one command.\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return AR_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return AR_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("autorthanc %s\n", AR_VERSION);
        return AR_EXIT_OK;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"run", ar_cmd_run},       {"check", ar_cmd_check},   {"jobs", ar_cmd_jobs},
        {"retry", ar_cmd_retry},   {"status", ar_cmd_status}, {"test", ar_cmd_test},
        {"snapshot", ar_cmd_snapshot}, {"backtest", ar_cmd_backtest}, {"fire", ar_cmd_fire},
        {"repl", ar_cmd_repl},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "autorthanc: unknown command '%s'\n\n%s", cmd, usage);
    return AR_EXIT_USAGE;
}
