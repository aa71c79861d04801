/* config.h - autorthanc configuration: defaults < YAML file < environment.
 *
 * Owns nothing after load (plain struct with fixed buffers).  The YAML file is
 * a flat mapping of lower-case keys (the table below); an unknown key is an
 * error naming the key and the file.  Environment variables override the
 * file.  The password is never printed by anything in this module.
 *
 *   yaml key              environment variable(s)                       default
 *   orthanc_url           AUTORTHANC_ORTHANC_URL                        http://localhost:8042
 *   orthanc_username      AUTORTHANC_ORTHANC_USERNAME                   ""
 *   orthanc_password      AUTORTHANC_ORTHANC_PASSWORD                   ""
 *   orthanc_password_file AUTORTHANC_ORTHANC_PASSWORD_FILE (a Docker or
 *                         systemd secret; its first line is the password)  ""
 *   (credentials in orthanc_url, http://user:pass@host, are moved into
 *   orthanc_username/orthanc_password at load: the URL kept and shown never
 *   holds them)
 *   rules_dir             AUTORTHANC_RULES_DIR,
 *                         ORTHANC_AUTOMATION_JSON_SCRIPTS_PATH (alias)  ./rules
 *   storage_dir           AUTORTHANC_STORAGE_DIR,
 *                         ORTHANC_AUTOMATION_STORAGE_PATH (alias)       ./storage
 *   state_dir             AUTORTHANC_STATE_DIR                          ./state (never inside storage by default)
 *   poll_interval         AUTORTHANC_POLL_INTERVAL  (seconds, float)    1
 *   start_at              AUTORTHANC_START_AT ("beginning" | "now")     beginning
 *   output_uid            AUTORTHANC_OUTPUT_UID  (-1 = leave)           -1
 *   output_gid            AUTORTHANC_OUTPUT_GID                         -1
 *   max_connections       AUTORTHANC_MAX_CONNECTIONS (parallel transfers) 4
 *   max_parallel_exports  AUTORTHANC_MAX_PARALLEL_EXPORTS               2
 *   forward_concurrency   AUTORTHANC_FORWARD_CONCURRENCY (per FORWARD target) 1
 *   target_concurrency    AUTORTHANC_TARGET_CONCURRENCY ("PACS=4,ARCHIVE=2":
 *                         per-target forward_concurrency)              ""
 *   forward_timeout       AUTORTHANC_FORWARD_TIMEOUT (seconds a FORWARD may run) 3600
 *   low_speed_limit       AUTORTHANC_LOW_SPEED_LIMIT (bytes/s)          1000
 *   low_speed_time        AUTORTHANC_LOW_SPEED_TIME (seconds below the limit
 *                         before a transfer is cut and retried)         60
 *   http_timeout          AUTORTHANC_HTTP_TIMEOUT (seconds, per request, 0=none) 60
 *   fsync                 AUTORTHANC_FSYNC (true/false)                 true
 *   verify_md5            AUTORTHANC_VERIFY_MD5 (true/false)            false
 *   retry_initial         AUTORTHANC_RETRY_INITIAL (seconds)            5
 *   retry_max             AUTORTHANC_RETRY_MAX (seconds)                600
 *   retry_attempts        AUTORTHANC_RETRY_ATTEMPTS                     10
 *   stable_age            AUTORTHANC_STABLE_AGE (seconds an arrival waits
 *                         before its first IsStable look)               60
 *   log_format            AUTORTHANC_LOG_FORMAT ("text" | "json")       text
 *   log_level             AUTORTHANC_LOG_LEVEL (debug|info|warn|error)  info
 *   rule_instruction_budget AUTORTHANC_RULE_INSTRUCTION_BUDGET          10000000
 *   rule_timeout_ms       AUTORTHANC_RULE_TIMEOUT_MS                    2000
 *   rule_memory_mb        AUTORTHANC_RULE_MEMORY_MB                     64
 *
 * Booleans accept true/false/yes/no/1/0/on/off (case-insensitive).
 */
#ifndef AR_CONFIG_H
#define AR_CONFIG_H

#include <stddef.h>

#define AR_PATH_LEN 4096

typedef struct ar_config {
    char orthanc_url[1024];
    char orthanc_username[256];
    char orthanc_password[256];
    char orthanc_password_file[AR_PATH_LEN]; /* "" none; read once at load */
    char rules_dir[AR_PATH_LEN];
    char storage_dir[AR_PATH_LEN];
    char state_dir[AR_PATH_LEN];
    char config_file[AR_PATH_LEN]; /* the file loaded, "" if none */
    double poll_interval;
    int start_at_now;              /* 1 when start_at == "now" */
    long output_uid;               /* -1: do not chown */
    long output_gid;
    int max_connections;
    int max_parallel_exports;      /* the storage lane's concurrency */
    int forward_concurrency;       /* each FORWARD target lane's concurrency */
    char target_concurrency[1024]; /* "NAME=N,...": overrides for some targets */
    double forward_timeout;        /* give a FORWARD up after this long in Orthanc */
    long low_speed_limit;          /* bytes/s: slower for low_speed_time s = stalled */
    long low_speed_time;
    long http_timeout;
    int fsync;
    int verify_md5;
    double retry_initial;
    double retry_max;
    int retry_attempts;
    double stable_age;
    int log_json;                  /* log_format == json */
    int log_level;                 /* 0 debug, 1 info, 2 warn, 3 error */
    long long rule_instruction_budget;
    long rule_timeout_ms;
    long rule_memory_mb;
} ar_config;

/* The concurrency of the FORWARD target lane for modality: its entry in
 * target_concurrency, else forward_concurrency. */
int ar_config_target_concurrency(const ar_config *c, const char *modality);

/* Fill c with defaults. */
void ar_config_defaults(ar_config *c);

/* Defaults, then the YAML file `path` (if path is NULL, $AUTORTHANC_CONFIG if
 * set, else no file), then the environment.  Validates values (URL scheme,
 * positive numbers, ...).  Returns AR_OK or AR_ECONFIG with a message naming
 * the file and key. */
int ar_config_load(ar_config *c, const char *path, char *err, size_t errlen);

/* Apply one key=value as if read from the YAML file (used by the loader and
 * by tests).  `origin` names where it came from for error messages. */
int ar_config_set(ar_config *c, const char *key, const char *value,
                  const char *origin, char *err, size_t errlen);

#endif
