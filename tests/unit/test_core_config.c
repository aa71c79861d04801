/* test_core_config.c - guards core/config.c: defaults < YAML file <
 * environment, the original's aliases, strict keys and values, and that the
 * password never appears in an error message. */
#include "config.h"
#include "err.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static int nfiles;

static const char *const all_env[] = {
    "AUTORTHANC_CONFIG", "AUTORTHANC_ORTHANC_URL", "AUTORTHANC_ORTHANC_USERNAME",
    "AUTORTHANC_ORTHANC_PASSWORD", "AUTORTHANC_RULES_DIR", "ORTHANC_AUTOMATION_JSON_SCRIPTS_PATH",
    "AUTORTHANC_STORAGE_DIR", "ORTHANC_AUTOMATION_STORAGE_PATH", "AUTORTHANC_STATE_DIR",
    "AUTORTHANC_POLL_INTERVAL", "AUTORTHANC_START_AT", "AUTORTHANC_OUTPUT_UID",
    "AUTORTHANC_OUTPUT_GID", "AUTORTHANC_MAX_CONNECTIONS", "AUTORTHANC_MAX_PARALLEL_EXPORTS",
    "AUTORTHANC_HTTP_TIMEOUT", "AUTORTHANC_FSYNC", "AUTORTHANC_VERIFY_MD5",
    "AUTORTHANC_RETRY_INITIAL", "AUTORTHANC_RETRY_MAX", "AUTORTHANC_RETRY_ATTEMPTS",
    "AUTORTHANC_STABLE_AGE", "AUTORTHANC_LOG_FORMAT", "AUTORTHANC_LOG_LEVEL",
    "AUTORTHANC_RULE_INSTRUCTION_BUDGET", "AUTORTHANC_RULE_TIMEOUT_MS", "AUTORTHANC_RULE_MEMORY_MB",
};

static void clear_env(void)
{
    size_t i;
    for (i = 0; i < sizeof all_env / sizeof all_env[0]; i++)
        unsetenv(all_env[i]);
}

/* Write a YAML file into the temp dir; returns its path (static buffer ring). */
static const char *yaml(const char *text)
{
    static char paths[8][128];
    char *p = paths[nfiles % 8];
    FILE *f;
    snprintf(p, 128, "%s/c%d.yaml", dir, nfiles++);
    f = fopen(p, "wb");
    if (!f || fwrite(text, 1, strlen(text), f) != strlen(text)) {
        perror(p);
        exit(2);
    }
    fclose(f);
    return p;
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

static void test_defaults(void)
{
    ar_config c;
    char err[512] = "";
    clear_env();
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_OK);
    CHECK_STR(c.orthanc_url, "http://localhost:8042");
    CHECK_STR(c.orthanc_username, "");
    CHECK_STR(c.orthanc_password, "");
    CHECK_STR(c.rules_dir, "./rules");
    CHECK_STR(c.storage_dir, "./storage");
    CHECK_STR(c.state_dir, "./state");
    CHECK_STR(c.config_file, "");
    CHECK(c.poll_interval == 1.0, "poll_interval default 1");
    CHECK_INT(c.start_at_now, 0);
    CHECK_INT(c.output_uid, -1);
    CHECK_INT(c.output_gid, -1);
    CHECK_INT(c.max_connections, 4);
    CHECK_INT(c.max_parallel_exports, 2);
    CHECK_INT(c.http_timeout, 60);
    CHECK_INT(c.fsync, 1);
    CHECK_INT(c.verify_md5, 0);
    CHECK(c.retry_initial == 5.0 && c.retry_max == 600.0, "retry defaults");
    CHECK_INT(c.retry_attempts, 10);
    CHECK(c.stable_age == 60.0, "stable_age default");
    CHECK_INT(c.log_json, 0);
    CHECK_INT(c.log_level, 1);
    CHECK_INT(c.rule_instruction_budget, 10000000);
    CHECK_INT(c.rule_timeout_ms, 2000);
    CHECK_INT(c.rule_memory_mb, 64);
}

static void test_file(void)
{
    ar_config c;
    char err[512] = "";
    const char *p;
    clear_env();
    p = yaml("# autorthanc\n"
             "orthanc_url: https://pacs.example.org:8443/orthanc/\n"
             "orthanc_username: alice\n"
             "orthanc_password: \"s3cr:et #1\"\n"
             "rules_dir: /etc/autorthanc/rules\n"
             "storage_dir: '/data/storage'\n"
             "state_dir: /var/lib/autorthanc\n"
             "poll_interval: 0.25\n"
             "start_at: now\n"
             "output_uid: 1000\n"
             "output_gid: 0\n"
             "max_connections: 8\n"
             "max_parallel_exports: 3\n"
             "http_timeout: 0\n"
             "fsync: no\n"
             "verify_md5: On\n"
             "retry_initial: 0.5\n"
             "retry_max: 30\n"
             "retry_attempts: 3\n"
             "stable_age: 0\n"
             "log_format: json\n"
             "log_level: warning\n"
             "rule_instruction_budget: 5000000000\n"
             "rule_timeout_ms: 100\n"
             "rule_memory_mb: 8\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_OK);
    CHECK(err[0] == '\0', "no error: %s", err);
    CHECK_STR(c.orthanc_url, "https://pacs.example.org:8443/orthanc");
    CHECK_STR(c.orthanc_username, "alice");
    CHECK_STR(c.orthanc_password, "s3cr:et #1");
    CHECK_STR(c.rules_dir, "/etc/autorthanc/rules");
    CHECK_STR(c.storage_dir, "/data/storage");
    CHECK_STR(c.state_dir, "/var/lib/autorthanc");
    CHECK_STR(c.config_file, p);
    CHECK(c.poll_interval == 0.25, "poll_interval 0.25");
    CHECK_INT(c.start_at_now, 1);
    CHECK_INT(c.output_uid, 1000);
    CHECK_INT(c.output_gid, 0);
    CHECK_INT(c.max_connections, 8);
    CHECK_INT(c.max_parallel_exports, 3);
    CHECK_INT(c.http_timeout, 0);
    CHECK_INT(c.fsync, 0);
    CHECK_INT(c.verify_md5, 1);
    CHECK(c.retry_initial == 0.5 && c.retry_max == 30.0, "retry values");
    CHECK_INT(c.retry_attempts, 3);
    CHECK(c.stable_age == 0.0, "stable_age 0");
    CHECK_INT(c.log_json, 1);
    CHECK_INT(c.log_level, 2);
    CHECK_INT(c.rule_instruction_budget, 5000000000LL);
    CHECK_INT(c.rule_timeout_ms, 100);
    CHECK_INT(c.rule_memory_mb, 8);

    /* empty file, comments only, a bare document marker, null values */
    CHECK_INT(ar_config_load(&c, yaml(""), err, sizeof err), AR_OK);
    CHECK_INT(ar_config_load(&c, yaml("# nothing\n\n"), err, sizeof err), AR_OK);
    CHECK_INT(ar_config_load(&c, yaml("---\n...\n"), err, sizeof err), AR_OK);
    CHECK_INT(ar_config_load(&c, yaml("orthanc_username:\northanc_password: ~\n"), err, sizeof err), AR_OK);
    CHECK_STR(c.orthanc_username, "");
    /* a flow mapping is still a flat mapping */
    CHECK_INT(ar_config_load(&c, yaml("{log_level: debug, max_connections: 16}\n"), err, sizeof err), AR_OK);
    CHECK_INT(c.log_level, 0);
    CHECK_INT(c.max_connections, 16);
    /* trailing slashes go, the scheme's own do not */
    CHECK_INT(ar_config_load(&c, yaml("orthanc_url: http://h:1///\n"), err, sizeof err), AR_OK);
    CHECK_STR(c.orthanc_url, "http://h:1");
    CHECK_INT(ar_config_load(&c, yaml("orthanc_url: HTTP://H\n"), err, sizeof err), AR_OK);
    CHECK_STR(c.orthanc_url, "HTTP://H");

    /* AUTORTHANC_CONFIG is used when no path is given */
    setenv("AUTORTHANC_CONFIG", yaml("poll_interval: 7\n"), 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_OK);
    CHECK(c.poll_interval == 7.0, "AUTORTHANC_CONFIG file read");
    CHECK(c.config_file[0] != '\0', "config_file set from AUTORTHANC_CONFIG");
    /* an explicit path wins over AUTORTHANC_CONFIG */
    CHECK_INT(ar_config_load(&c, yaml("poll_interval: 3\n"), err, sizeof err), AR_OK);
    CHECK(c.poll_interval == 3.0, "explicit path wins");
    unsetenv("AUTORTHANC_CONFIG");
}

static void test_file_errors(void)
{
    ar_config c;
    char err[512], missing[128];
    const char *p;
    clear_env();

    p = yaml("orthanc_url: http://x\nstorage_folder: /data\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "storage_folder") && contains(err, p) && contains(err, "line 2"),
          "unknown key names key, file and line: %s", err);

    snprintf(missing, sizeof missing, "%s/does-not-exist.yaml", dir);
    CHECK_INT(ar_config_load(&c, missing, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, missing) && contains(err, "No such file"), "missing file named: %s", err);

    CHECK_INT(ar_config_load(&c, dir, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, dir) && contains(err, "not a regular file"), "directory refused: %s", err);

    p = yaml("orthanc_url: http://x\nrules_dir: \"a\n\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, p) && contains(err, "invalid YAML") && contains(err, "line "),
          "parse error names file, problem and line: %s", err);

    p = yaml("log_level: info\n\tfsync: 1\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, p) && contains(err, "line 2") && contains(err, "invalid YAML"), "tab indentation: %s", err);

    p = yaml("rules_dir:\n  - a\n  - b\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "rules_dir") && contains(err, "a list") && contains(err, "line 2"),
          "list value refused: %s", err);

    p = yaml("storage_dir:\n  path: /x\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "storage_dir") && contains(err, "a mapping"), "mapping value refused: %s", err);

    p = yaml("rules_dir: &r /x\nstorage_dir: *r\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "storage_dir") && contains(err, "alias"), "alias refused: %s", err);

    p = yaml("- a\n- b\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "mapping"), "top-level list refused: %s", err);

    p = yaml("just a string\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "mapping"), "top-level scalar refused: %s", err);

    p = yaml("log_level: info\n---\nlog_level: debug\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "one YAML document") && contains(err, "line 2"), "second document refused: %s", err);

    p = yaml("log_level: info\nlog_level: debug\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "twice") && contains(err, "log_level") && contains(err, "line 2"),
          "duplicate key refused: %s", err);

    p = yaml("? [a, b]\n: c\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "keys must be plain"), "complex key refused: %s", err);

    p = yaml("rules_dir: \"a\\0b\"\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "NUL"), "NUL in value refused: %s", err);

    p = yaml("poll_interval: fast\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "poll_interval") && contains(err, "fast") && contains(err, p) && contains(err, "line 1"),
          "bad value names key, value, file, line: %s", err);

    p = yaml("storage_dir: ''\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "storage_dir") && contains(err, "empty"), "empty path refused: %s", err);

    p = yaml("retry_initial: 60\nretry_max: 10\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "retry_max"), "retry_max < retry_initial refused: %s", err);

    p = yaml("orthanc_url: \"\\xff\\u00e9\"\nlog_level: [\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
}

static void test_env(void)
{
    ar_config c;
    char err[512];
    const char *p;
    clear_env();
    p = yaml("orthanc_url: http://file:1\nrules_dir: /file/rules\nstorage_dir: /file/storage\n"
             "poll_interval: 2\nmax_connections: 3\n");

    setenv("AUTORTHANC_ORTHANC_URL", "https://env:2/", 1);
    setenv("AUTORTHANC_POLL_INTERVAL", " 0.5 ", 1);
    setenv("AUTORTHANC_MAX_CONNECTIONS", "", 1);      /* empty = unset */
    setenv("AUTORTHANC_ORTHANC_USERNAME", "bob", 1);
    setenv("AUTORTHANC_ORTHANC_PASSWORD", "pw with spaces", 1);
    setenv("AUTORTHANC_FSYNC", "FALSE", 1);
    setenv("AUTORTHANC_START_AT", "now", 1);
    setenv("AUTORTHANC_LOG_FORMAT", "json", 1);
    setenv("AUTORTHANC_LOG_LEVEL", "error", 1);
    setenv("AUTORTHANC_OUTPUT_UID", "-1", 1);
    setenv("AUTORTHANC_STABLE_AGE", "1e1", 1);
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_OK);
    CHECK_STR(c.orthanc_url, "https://env:2");
    CHECK(c.poll_interval == 0.5, "env number overrides file (%g)", c.poll_interval);
    CHECK_INT(c.max_connections, 3);
    CHECK_STR(c.orthanc_username, "bob");
    CHECK_STR(c.orthanc_password, "pw with spaces");
    CHECK_INT(c.fsync, 0);
    CHECK_INT(c.start_at_now, 1);
    CHECK_INT(c.log_json, 1);
    CHECK_INT(c.log_level, 3);
    CHECK_INT(c.output_uid, -1);
    CHECK(c.stable_age == 10.0, "1e1 parses");
    CHECK_STR(c.rules_dir, "/file/rules");
    CHECK_STR(c.storage_dir, "/file/storage");
    clear_env();

    /* aliases from the original autorthanc */
    setenv("ORTHANC_AUTOMATION_JSON_SCRIPTS_PATH", "/alias/rules", 1);
    setenv("ORTHANC_AUTOMATION_STORAGE_PATH", "/alias/storage", 1);
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_OK);
    CHECK_STR(c.rules_dir, "/alias/rules");
    CHECK_STR(c.storage_dir, "/alias/storage");
    /* AUTORTHANC_* wins over the alias */
    setenv("AUTORTHANC_RULES_DIR", "/new/rules", 1);
    setenv("AUTORTHANC_STORAGE_DIR", "/new/storage", 1);
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_OK);
    CHECK_STR(c.rules_dir, "/new/rules");
    CHECK_STR(c.storage_dir, "/new/storage");
    /* an empty AUTORTHANC_* leaves the alias in charge */
    setenv("AUTORTHANC_RULES_DIR", "", 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_OK);
    CHECK_STR(c.rules_dir, "/alias/rules");
    clear_env();

    /* bad environment values name the variable */
    setenv("AUTORTHANC_MAX_PARALLEL_EXPORTS", "two", 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "AUTORTHANC_MAX_PARALLEL_EXPORTS") && contains(err, "two"),
          "env error names variable: %s", err);
    clear_env();
    setenv("AUTORTHANC_LOG_LEVEL", "verbose", 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "AUTORTHANC_LOG_LEVEL") && contains(err, "debug, info"), "log level: %s", err);
    clear_env();
    setenv("AUTORTHANC_LOG_FORMAT", "xml", 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_ECONFIG);
    clear_env();
    setenv("AUTORTHANC_START_AT", "tomorrow", 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "beginning or now"), "start_at: %s", err);
    clear_env();
    setenv("AUTORTHANC_ORTHANC_URL", "ftp://x", 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "http://"), "url scheme: %s", err);
    clear_env();
}

static void test_values(void)
{
    static const struct { const char *key, *value; int ok; } t[] = {
        { "poll_interval", "1", 1 }, { "poll_interval", "0.01", 1 }, { "poll_interval", "0", 0 },
        { "poll_interval", "-1", 0 }, { "poll_interval", "1x", 0 }, { "poll_interval", "", 0 },
        { "poll_interval", "nan", 0 }, { "poll_interval", "inf", 0 }, { "poll_interval", "0x10", 0 },
        { "poll_interval", "1e999", 0 }, { "poll_interval", "1,5", 0 }, { "poll_interval", ".", 0 },
        { "max_connections", "1", 1 }, { "max_connections", "256", 1 }, { "max_connections", "0", 0 },
        { "max_connections", "257", 0 }, { "max_connections", "4.0", 0 }, { "max_connections", "4 4", 0 },
        { "max_connections", "99999999999999999999", 0 }, { "max_connections", "+4", 1 },
        { "output_uid", "-2", 0 }, { "output_uid", "4294967294", 1 }, { "output_uid", "4294967295", 0 },
        { "http_timeout", "-1", 0 }, { "retry_attempts", "0", 0 }, { "rule_memory_mb", "0", 0 },
        { "rule_timeout_ms", "3600001", 0 }, { "rule_instruction_budget", "999", 0 },
        { "fsync", "yes", 1 }, { "fsync", "1", 1 }, { "fsync", "OFF", 1 }, { "fsync", "maybe", 0 },
        { "fsync", "2", 0 }, { "start_at", "BEGINNING", 1 }, { "start_at", "", 0 },
        { "orthanc_url", "http://", 0 }, { "orthanc_url", "http:///x", 0 }, { "orthanc_url", "localhost:8042", 0 },
        { "orthanc_url", "http://a b", 0 }, { "orthanc_url", "https://[::1]:8042", 1 },
        { "orthanc_username", "a:b", 0 }, { "orthanc_username", "a\nb", 0 }, { "orthanc_username", "", 1 },
        { "rules_dir", "", 0 }, { "state_dir", "relative/state", 1 },
        { "no_such_key", "1", 0 }, { "ORTHANC_URL", "http://x", 0 },
        { "target_concurrency", "PACS=4,ARCHIVE=2", 1 }, { "target_concurrency", "", 1 },
        { "target_concurrency", "PACS", 0 }, { "target_concurrency", "PACS=0", 0 },
        { "target_concurrency", "=2", 0 }, { "target_concurrency", "PACS=2,", 1 },
        { "target_concurrency", "PACS=65", 0 }, { "target_concurrency", "PACS=2x", 0 },
        { "forward_concurrency", "0", 0 }, { "forward_timeout", "0", 0 },
        { "low_speed_limit", "0", 0 }, { "low_speed_time", "5", 1 },
    };
    {
        ar_config c;
        char err[512] = "";
        ar_config_defaults(&c);
        CHECK(ar_config_set(&c, "target_concurrency", "PACS=4,ARCHIVE=2", "test", err, sizeof err) == 0,
              "%s", err);
        CHECK_INT(ar_config_target_concurrency(&c, "PACS"), 4);
        CHECK_INT(ar_config_target_concurrency(&c, "ARCHIVE"), 2);
        CHECK_INT(ar_config_target_concurrency(&c, "PAC"), 1);
        CHECK_INT(ar_config_target_concurrency(&c, "OTHER"), 1);
    }
    size_t i;
    for (i = 0; i < sizeof t / sizeof t[0]; i++) {
        ar_config c;
        char err[512] = "";
        int rc;
        ar_config_defaults(&c);
        rc = ar_config_set(&c, t[i].key, t[i].value, "test", err, sizeof err);
        CHECK((rc == AR_OK) == t[i].ok, "%s='%s': rc %d (%s)", t[i].key, t[i].value, rc, err);
        if (!t[i].ok)
            CHECK(contains(err, "test: ") && contains(err, t[i].key), "message names origin and key: %s", err);
    }
    {
        char longv[5000], err[512];
        ar_config c;
        memset(longv, 'a', sizeof longv - 1);
        longv[sizeof longv - 1] = '\0';
        ar_config_defaults(&c);
        CHECK_INT(ar_config_set(&c, "rules_dir", longv, "test", err, sizeof err), AR_ECONFIG);
        CHECK(strlen(err) < 300, "long value not echoed whole");
        CHECK_INT(ar_config_set(&c, NULL, "x", NULL, err, sizeof err), AR_ECONFIG);
    }
}

static void test_password_never_shown(void)
{
    static const char secret[] = "Hunter2-TopSecret";
    char big[600], err[1024], text[2048];
    ar_config c;
    const char *p;
    clear_env();

    memset(big, 0, sizeof big);
    for (size_t i = 0; i + sizeof secret < sizeof big - 1; i += sizeof secret - 1)
        memcpy(big + i, secret, sizeof secret - 1);

    /* too long, from the API, the file and the environment */
    ar_config_defaults(&c);
    CHECK_INT(ar_config_set(&c, "orthanc_password", big, "test", err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "invalid value for orthanc_password") && !contains(err, "Hunter2"),
          "API: %s", err);
    snprintf(text, sizeof text, "orthanc_password: %s\n", big);
    p = yaml(text);
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "orthanc_password") && !contains(err, "Hunter2"), "file: %s", err);
    setenv("AUTORTHANC_ORTHANC_PASSWORD", big, 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "AUTORTHANC_ORTHANC_PASSWORD") && !contains(err, "Hunter2"), "env: %s", err);
    clear_env();

    /* not a scalar */
    p = yaml("orthanc_password: [Hunter2-TopSecret]\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(!contains(err, "Hunter2"), "list password: %s", err);
    p = yaml("orthanc_password: {Hunter2-TopSecret: 1}\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(!contains(err, "Hunter2"), "mapping password: %s", err);

    /* misspelt key: the value is not echoed either */
    p = yaml("orthanc_pasword: Hunter2-TopSecret\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "orthanc_pasword") && !contains(err, "Hunter2"), "typo key: %s", err);

    /* broken YAML after the password */
    p = yaml("orthanc_password: Hunter2-TopSecret\nrules_dir: \"unterminated\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(!contains(err, "Hunter2"), "parse error: %s", err);
    p = yaml("orthanc_password: \"Hunter2-TopSecret\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(!contains(err, "Hunter2"), "unterminated password: %s", err);
    p = yaml("orthanc_password: Hunter2-TopSecret\northanc_password: Hunter2-TopSecret\n");
    CHECK_INT(ar_config_load(&c, p, err, sizeof err), AR_ECONFIG);
    CHECK(!contains(err, "Hunter2"), "duplicate password: %s", err);

    /* credentials inside a bad URL are masked */
    setenv("AUTORTHANC_ORTHANC_URL", "htp://admin:Hunter2-TopSecret@host:8042", 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_ECONFIG);
    CHECK(contains(err, "@host:8042") && !contains(err, "Hunter2"), "url creds masked: %s", err);
    setenv("AUTORTHANC_ORTHANC_URL", "admin:Hunter2-TopSecret@host", 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_ECONFIG);
    CHECK(!contains(err, "Hunter2"), "url creds masked without scheme: %s", err);
    setenv("AUTORTHANC_ORTHANC_URL", "http://admin:Hunter2-TopSecret@ host", 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_ECONFIG);
    CHECK(!contains(err, "Hunter2"), "url creds masked (space): %s", err);
    clear_env();

    /* a good password loads, and nothing is written into err */
    memset(err, 0, sizeof err);
    setenv("AUTORTHANC_ORTHANC_PASSWORD", secret, 1);
    CHECK_INT(ar_config_load(&c, NULL, err, sizeof err), AR_OK);
    CHECK_STR(c.orthanc_password, secret);
    CHECK(!contains(err, "Hunter2"), "no message on success");
    clear_env();
}

/* A state folder inside the storage folder (or the other way round, or the
 * same folder, however spelt) is refused naming both: an export could
 * replace the ledger. */
static void test_nested_folders(void)
{
    struct { const char *state, *storage; int bad; } cases[] = {
        {"/srv/ar/storage/state", "/srv/ar/storage", 1},
        {"/srv/ar/storage", "/srv/ar/storage/sub/../", 1},
        {"/srv/ar", "/srv/ar/storage", 1},
        {"/srv/ar/./storage/x/..", "/srv/ar/storage", 1},
        {"/srv/ar/state", "/srv/ar/storage", 0},
        {"/srv/ar/storage-state", "/srv/ar/storage", 0},
        {"state", "storage", 0},
        {"storage/state", "storage", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ar_config c;
        char err[1024] = "";
        clear_env();
        setenv("AUTORTHANC_STATE_DIR", cases[i].state, 1);
        setenv("AUTORTHANC_STORAGE_DIR", cases[i].storage, 1);
        int rc = ar_config_load(&c, NULL, err, sizeof err);
        if (cases[i].bad)
            CHECK(rc == AR_ECONFIG && contains(err, "state_dir") && contains(err, "storage_dir") &&
                      contains(err, "must not be one inside the other"),
                  "state %s, storage %s refused: %s", cases[i].state, cases[i].storage, err);
        else
            CHECK(rc == AR_OK, "state %s, storage %s accepted: %s", cases[i].state,
                  cases[i].storage, err);
    }
    unsetenv("AUTORTHANC_STATE_DIR");
    unsetenv("AUTORTHANC_STORAGE_DIR");
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/ar-config-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_defaults();
    test_file();
    test_file_errors();
    test_env();
    test_values();
    test_password_never_shown();
    test_nested_folders();
    {
        int i;
        char p[128];
        for (i = 0; i < nfiles; i++) {
            snprintf(p, sizeof p, "%s/c%d.yaml", dir, i);
            unlink(p);
        }
        rmdir(dir);
    }
    return tap_done();
}
