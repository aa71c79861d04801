/* test_engine.c - the rule engine (bindings/engine.h) from the C side.
 *
 * Guards: the sandbox (io/os/require/dofile/loadfile/string.dump/binary
 * load/string metatable/global leakage/writes to the study), runaway rules
 * with and without pcall (instruction budget and wall clock), a memory bomb,
 * broken rule files reported with file and line, the study object built from real Orthanc 1.10 answers
 * (tests/unit/data: recorded from a real Orthanc, plus hand-written hostile
 * shapes), default export names and their fallbacks, sanitised hostile names,
 * duplicate file names, and the time of 1000 JSON rules on one study
 * (printed, not asserted).
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "err.h"
#include "tap.h"
#include "testfs.h"

/* The snapshot the test works on (a value these tests keep here; freed
 * before its engine). */
static ar_study *g_st;

static char datadir[4096];

static void find_datadir(void)
{
    const char *src = getenv("AR_SOURCE_DIR");
    if (src && *src) {
        snprintf(datadir, sizeof datadir, "%s/tests/unit/data", src);
    } else {
        const char *slash = strrchr(__FILE__, '/');
        int n = slash ? (int)(slash - __FILE__) : 1;
        snprintf(datadir, sizeof datadir, "%.*s/data", n, slash ? __FILE__ : ".");
    }
}

static char *data(const char *name, size_t *len)
{
    char path[4200];
    char *s;
    snprintf(path, sizeof path, "%s/%s", datadir, name);
    s = tf_slurp(path, len);
    if (!s) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    return s;
}

static ar_engine *engine(long long budget, long timeout_ms, long mb, const char *lua_dir)
{
    ar_engine_opts o;
    ar_engine *e = NULL;
    char err[1024];
    memset(&o, 0, sizeof o);
    o.instruction_budget = budget;
    o.timeout_ms = timeout_ms;
    o.memory_mb = mb;
    o.lua_dir = lua_dir;
    if (ar_engine_new(&o, &e, err, sizeof err)) {
        fprintf(stderr, "ar_engine_new: %s\n", err);
        exit(2);
    }
    return e;
}

static int set_fixture(ar_engine *e, const char *name)
{
    size_t len;
    char err[1024];
    char *s = data(name, &len);
    int rc = (ar_study_free(g_st), g_st = NULL, ar_engine_set_study_fixture(e, s, len, &g_st, err, sizeof err));
    if (rc)
        printf("# set_study_fixture(%s): %s\n", name, err);
    free(s);
    return rc;
}

static long rule_index(ar_engine *e, const char *name)
{
    size_t i;
    for (i = 0; i < ar_engine_rule_count(e); i++)
        if (strcmp(ar_engine_rule(e, i)->name, name) == 0)
            return (long)i;
    return -1;
}

static const ar_verdict *verdict(ar_engine *e, const ar_verdict *v, size_t n, const char *rule)
{
    size_t i;
    long r = rule_index(e, rule);
    for (i = 0; i < n; i++)
        if ((long)v[i].rule == r)
            return &v[i];
    return NULL;
}

static int has(const char *s, const char *needle)
{
    return s && strstr(s, needle) != NULL;
}

/* Every '/'-separated component is a safe name. */
static int safe_path(const char *p)
{
    const char *c = p;
    if (!*p || *p == '/')
        return 0;
    while (*c) {
        size_t n = strcspn(c, "/"), i;
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.') || n > 255)
            return 0;
        for (i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)c[i];
            if (ch < 0x20 || ch == 0x7f || strchr("\\<>:\"|?*", ch))
                return 0;
        }
        c += n;
        if (*c == '/')
            c++;
    }
    return c[-1] != '/';
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- the study object ---------------------------------------------------- */

static const char *shape_rule =
    "return {\n"
    "  check_on = 'study', action = 'download',\n"
    "  match = function(study)\n"
    "    assert(study.id == 'fbaf8b71-249f4739-4be973ff-75b32d02-aeec7927', study.id)\n"
    "    assert(#study.series == 2, 'series count')\n"
    "    assert(study.series[1].tags.SeriesNumber == '1')\n"
    "    assert(study.series[2].tags.SeriesDate == '20240132')\n"
    "    assert(study.series[1].instances_count == 2)\n"
    "    assert(study.series[1].instances[1].tags.InstanceNumber == '1')\n"
    "    assert(study.series[1].instances[2].tags.SOPInstanceUID == '1.2.3.4.5.1.2')\n"
    "    assert(study.series[1].instances[2].file_size == 568)\n"
    "    assert(math.type(study.series[1].instances[2].file_size) == 'integer')\n"
    "    local n = 0\n"
    "    for _, s in ipairs(study.series) do n = n + #s.instances end\n"
    "    assert(n == 3, 'instances ' .. n)\n"
    "    local keys = {}\n"
    "    for k in pairs(study.tags) do keys[#keys + 1] = k end\n"
    "    table.sort(keys)\n"
    "    local got = table.concat(keys, ',')\n"
    "    assert(got == 'StudyDate,StudyDescription,StudyID,StudyInstanceUID', got)\n"
    "    assert(study.patient.PatientName == 'DOE^JOHN^^Dr')\n"
    "    assert(study.patient.PatientID == 'PID/01')\n"
    "    assert(study.is_stable == true)\n"
    "    assert(study.last_update:match('^%d+T%d+$'))\n"
    "    assert(study.series[1] == study.series[1], 'stable identity')\n"
    "    assert(study.tags.AccessionNumber == nil)\n"
    "    assert(getmetatable(study) ~= nil)\n"
    "    return true, 'shape ok'\n"
    "  end,\n"
    "}\n";

static void test_study(void)
{
    ar_engine *e = engine(0, 0, 0, NULL);
    char *dir = tf_new_dir("ar-engine");
    char err[1024];
    ar_verdict *v = NULL;
    size_t n = 0, l1, l2, l3;
    char *a, *b, *c;
    int rc;

    tf_write_file(dir, "shape.lua", shape_rule);
    rc = ar_engine_load_rules_dir(e, dir, err, sizeof err);
    CHECK(rc == 0 && ar_engine_rule_count(e) == 1 && ar_engine_rule(e, 0)->ok, "shape rule: %s",
          ar_engine_rule_count(e) ? ar_engine_rule(e, 0)->error : err);

    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    CHECK(rc != 0, "no study yet: evaluate refuses");

    CHECK(set_fixture(e, "study_ct_two_series.json") == 0, "fixture loads");
    CHECK_STR(ar_study_id(g_st), "fbaf8b71-249f4739-4be973ff-75b32d02-aeec7927");
    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    CHECK(rc == 0 && n == 1, "evaluate: %s", err);
    if (n == 1)
        CHECK(v[0].matched && !v[0].error, "study shape from the fixture: %s", v[0].reason);
    free(v);

    /* The same from the three separate answers. */
    a = data("orthanc_study.json", &l1);
    b = data("orthanc_series.json", &l2);
    c = data("orthanc_instances.json", &l3);
    rc = (ar_study_free(g_st), g_st = NULL, ar_engine_set_study(e, a, l1, b, l2, c, l3, &g_st, err, sizeof err));
    CHECK(rc == 0, "set_study from real answers: %s", err);
    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    CHECK(rc == 0 && n == 1 && v[0].matched, "study shape from the answers: %s",
          n ? v[0].reason : err);
    free(v);

    /* Wrong shapes: errors, and no current study afterwards. */
    rc = (ar_study_free(g_st), g_st = NULL, ar_engine_set_study(e, a, l1, b, l2, c, l3 / 2, &g_st, err, sizeof err));
    CHECK(rc == AR_ENET && has(err, "/studies/{id}/instances: invalid JSON"),
          "a truncated answer is worth retrying: %d %s", rc, err);
    CHECK_STR(ar_study_id(g_st), "");
    rc = (ar_study_free(g_st), g_st = NULL, ar_engine_set_study(e, b, l2, a, l1, c, l3, &g_st, err, sizeof err));
    CHECK(rc == AR_ERR, "answers in the wrong order are refused: %d %s", rc, err);
    CHECK_STR(ar_study_id(g_st), "");
    rc = (ar_study_free(g_st), g_st = NULL, ar_engine_set_study(e, a, l1, "{}", 2, "[{\"ID\":5}]", 10, &g_st, err, sizeof err));
    CHECK(rc != 0 && has(err, "instances"), "bad instances refused: %s", err);
    {
        const char *s = "{\"ID\":\"x\",\"MainDicomTags\":[1,2]}";
        rc = (ar_study_free(g_st), g_st = NULL, ar_engine_set_study(e, s, strlen(s), "[]", 2, "[]", 2, &g_st, err, sizeof err));
    }
    CHECK(rc != 0, "tags as a list refused: %s", err);
    {
        const char *s = "{\"study\":{\"ID\":\"\xff\"},\"series\":{}}";
        rc = (ar_study_free(g_st), g_st = NULL, ar_engine_set_study_fixture(e, s, strlen(s), &g_st, err, sizeof err));
    }
    CHECK(rc == 0, "odd but harmless fixture accepted: %s", err);
    rc = (ar_study_free(g_st), g_st = NULL, ar_engine_set_study_fixture(e, "not json", 8, &g_st, err, sizeof err));
    CHECK(rc == AR_ERR && has(err, "invalid JSON"), "fixture not JSON: %s", err);
    free(a);
    free(b);
    free(c);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

/* Mutated answers (fixed seed): every one is refused with a message or
 * accepted and then usable; none crashes (run under ASan in CI). */
static void test_mutations(void)
{
    ar_engine *e = engine(0, 0, 0, NULL);
    char *dir = tf_new_dir("ar-engine");
    char err[1024];
    size_t len, k, n = 0, accepted = 0;
    char *orig = data("study_ct_two_series.json", &len);
    char *buf = malloc(len + 1);
    unsigned long long seed = 42;
    ar_verdict *v = NULL;
    ar_plan p;
    int iter;

    tf_write_file(dir, "all.lua",
               "return { check_on = 'study', action = 'download', match = function(study)\n"
               "  local n = 0\n"
               "  for _, s in ipairs(study.series) do for _, i in ipairs(s.instances) do\n"
               "    n = n + #(i.tags.SOPInstanceUID or '') end end\n"
               "  for k, v in pairs(study.tags) do n = n + #k + #v end\n"
               "  return true, tostring(n) end }\n");
    CHECK(ar_engine_load_rules_dir(e, dir, err, sizeof err) == 0, "load: %s", err);
    for (iter = 0; iter < 400; iter++) {
        size_t cut = len, flips;
        int rc;
        memcpy(buf, orig, len + 1);
        for (flips = 0; flips < 1 + (size_t)(iter % 4); flips++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            k = (size_t)(seed >> 33) % len;
            switch ((seed >> 20) % 4) {
            case 0: buf[k] = (char)(seed >> 8); break;          /* random byte */
            case 1: buf[k] = "{}[]\",:0\\"[(seed >> 9) % 9]; break; /* structure */
            case 2: cut = k; break;                            /* truncate */
            default: buf[k] = '"'; break;
            }
        }
        err[0] = '\0';
        rc = (ar_study_free(g_st), g_st = NULL, ar_engine_set_study_fixture(e, buf, cut, &g_st, err, sizeof err));
        if (rc) {
            CHECK(err[0] != '\0', "mutation %d refused with a message", iter);
            continue;
        }
        accepted++;
        if (ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err) == 0)
            free(v);
        if (ar_engine_plan(e, g_st, 0, NULL, &p, err, sizeof err) == 0) {
            for (k = 0; k < p.n; k++)
                if (!safe_path(p.files[k].rel_path))
                    CHECK(0, "mutation %d: unsafe path %s", iter, p.files[k].rel_path);
            CHECK(safe_path(p.folder), "mutation %d: unsafe folder %s", iter, p.folder);
            ar_plan_free(&p);
        }
    }
    printf("# %zu of 400 mutated fixtures were still valid studies\n", accepted);
    free(buf);
    free(orig);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

/* ---- sandbox ------------------------------------------------------------------ */

typedef struct escape_case {
    const char *name;
    const char *body;     /* body of match(study, series) */
    const char *error;    /* expected error substring, or NULL: must match */
} escape_case;

static const escape_case escapes[] = {
    {"io", "return io.open('/etc/passwd')", "undefined global 'io'"},
    {"os", "return os.execute('true')", "undefined global 'os'"},
    {"require", "return require('io')", "undefined global 'require'"},
    {"dofile", "return dofile('/etc/passwd')", "undefined global 'dofile'"},
    {"loadfile", "return loadfile('/etc/passwd')", "undefined global 'loadfile'"},
    {"package", "return package.loaded", "undefined global 'package'"},
    {"debug", "return debug.getregistry()", "undefined global 'debug'"},
    {"dump", "return string.dump == nil and ('').dump == nil", NULL},
    {"binary_load", "local f, e = load('\\27LuaT\\0\\25\\147\\13\\10\\26\\10')\n"
                    "    return f == nil and tostring(e):find('binary') ~= nil, tostring(e)", NULL},
    {"binary_mode", "return load('return 1', 'x', 'b')", "only text chunks"},
    {"load_env", "local f = load('return io')\n    return f()", "undefined global 'io'"},
    {"load_own_global", "load('mine = 7')()\n    return mine == 7", NULL},
    {"string_mt", "return getmetatable('') == nil and getmetatable('abc') == nil", NULL},
    {"string_mt_write", "getmetatable('').__index.upper = function() return 'pwned' end",
     "attempt to index a nil value"},
    {"string_lib_write", "string.upper = function() return 'pwned' end", "read-only"},
    {"string_lib_rawset", "rawset(string, 'upper', function() return 'pwned' end)", "read-only"},
    {"string_lib_setmt", "setmetatable(string, {})", "protected metatable"},
    {"string_intact", "return ('abc'):upper() == 'ABC' and string.upper('a') == 'A'", NULL},
    {"study_write", "study.tags.StudyDescription = 'x'", "read-only"},
    {"study_write_deep", "study.series[1].tags.Modality = 'MR'", "read-only"},
    {"study_new_key", "study.evil = true", "read-only"},
    {"study_rawset", "rawset(study.tags, 'X', 1)", "read-only"},
    {"study_insert", "table.insert(study.series, {})", "read-only"},
    {"study_sort", "table.sort(study.series, function(a, b) return a.id > b.id end)", "read-only"},
    {"study_setmt", "setmetatable(study, nil)", "protected metatable"},
    {"study_intact", "return study.tags.StudyDescription == 'Brain^With/Slash'"
                     " and study.series[1].tags.Modality == 'CT' and study.evil == nil", NULL},
    {"gc_collect", "collectgarbage('collect')", "only collectgarbage(\"count\")"},
    {"gc_count", "return collectgarbage('count') > 0", NULL},
    {"gc_metamethod", "setmetatable({}, {__gc = function() while true do end end})", "__gc"},
    {"env_mt", "return getmetatable(_ENV) == false and _G == _ENV", NULL},
    {"env_rawset", "rawset(_ENV, 'own', 1)\n    return own == 1", NULL},
    {"own_setmt", "local t = setmetatable({}, {__index = function(_, k) return k .. '!' end})\n"
                  "    return t.x == 'x!'", NULL},
    {"unknown_global", "return no_such_thing", "undefined global 'no_such_thing'"},
    {"huge_rep", "return #string.rep('x', 1 << 40) > 0", NULL /* special: error */},
};

static void test_sandbox(void)
{
    ar_engine *e = engine(0, 0, 0, NULL);
    char *dir = tf_new_dir("ar-engine");
    char err[1024], text[2048];
    ar_verdict *v = NULL;
    size_t n = 0, i;
    const ar_verdict *x;
    int rc;

    for (i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
        char file[128];
        snprintf(text, sizeof text,
                 "return {\n  check_on = 'study', action = 'download',\n"
                 "  match = function(study, series)\n    %s\n  end,\n}\n", escapes[i].body);
        snprintf(file, sizeof file, "esc_%s.lua", escapes[i].name);
        tf_write_file(dir, file, text);
    }
    /* Global leakage: "leaker" sets globals, "reader" (loaded after) looks. */
    tf_write_file(dir, "leaker.lua",
               "leaked = 'from leaker'\n"
               "return { check_on = 'study', action = 'download',\n"
               "  match = function() shared_x = 1; return leaked == 'from leaker' and shared_x == 1 end }\n");
    tf_write_file(dir, "reader.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function() return leaked ~= nil or shared_x ~= nil end }\n");
    /* Escape attempts at load time. */
    tf_write_file(dir, "top_io.lua", "io.write('x')\nreturn {}\n");
    tf_write_file(dir, "top_base.lua",
               "getmetatable(_ENV).__index.print = nil\nreturn {}\n");
    rc = ar_engine_load_rules_dir(e, dir, err, sizeof err);
    CHECK(rc == 0, "load escapes: %s", err);
    CHECK(set_fixture(e, "study_ct_two_series.json") == 0, "fixture");

    {
        long t = rule_index(e, "top_io");
        CHECK(t >= 0 && !ar_engine_rule(e, (size_t)t)->ok &&
                  has(ar_engine_rule(e, (size_t)t)->error, "undefined global 'io'") &&
                  has(ar_engine_rule(e, (size_t)t)->error, "top_io.lua:1:"),
              "io at load time: %s", t >= 0 ? ar_engine_rule(e, (size_t)t)->error : "?");
        t = rule_index(e, "top_base");
        CHECK(t >= 0 && !ar_engine_rule(e, (size_t)t)->ok &&
                  has(ar_engine_rule(e, (size_t)t)->error, "attempt to index a boolean value"),
              "base unreachable at load time: %s", t >= 0 ? ar_engine_rule(e, (size_t)t)->error : "?");
    }

    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    CHECK(rc == 0, "evaluate escapes: %s", err);
    for (i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "esc_%s", escapes[i].name);
        x = verdict(e, v, n, name);
        if (!x) {
            CHECK(0, "no verdict for %s", name);
            continue;
        }
        if (strcmp(escapes[i].name, "huge_rep") == 0)
            CHECK(x->error && (has(x->reason, "not enough memory") || has(x->reason, "too large")),
                  "%s: %s", name, x->reason);
        else if (escapes[i].error)
            CHECK(x->error && has(x->reason, escapes[i].error) && has(x->reason, "rule esc_"),
                  "%s: want error '%s', got matched=%d error=%d '%s'", name, escapes[i].error,
                  x->matched, x->error, x->reason);
        else
            CHECK(!x->error && x->matched, "%s: want a match, got error=%d '%s'", name, x->error,
                  x->reason);
    }
    x = verdict(e, v, n, "leaker");
    CHECK(x && x->matched && !x->error, "a rule keeps its own globals: %s", x ? x->reason : "?");
    x = verdict(e, v, n, "reader");
    CHECK(x && x->error && has(x->reason, "undefined global 'leaked'"),
          "another rule's globals are invisible: %s", x ? x->reason : "?");
    /* Errors carry source:line of the rule. */
    x = verdict(e, v, n, "esc_io");
    CHECK(x && has(x->reason, "esc_io.lua:4:"), "error names file:line: %s", x ? x->reason : "?");
    free(v);

    /* A second evaluation: nothing a rule did above leaked into the shared state. */
    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    x = verdict(e, v, n, "esc_string_intact");
    CHECK(x && x->matched, "string library intact after the attacks");
    x = verdict(e, v, n, "esc_study_intact");
    CHECK(x && x->matched, "study intact after the attacks");
    free(v);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

/* ---- budgets and memory ---------------------------------------------------- */

static void test_runaway(void)
{
    ar_engine *e = engine(2000000, 5000, 0, NULL);
    char *dir = tf_new_dir("ar-engine");
    char err[1024];
    ar_verdict *v = NULL;
    size_t n = 0;
    const ar_verdict *x;
    struct timespec t0;
    int rc;

    tf_write_file(dir, "a_loop.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function() while true do end end }\n");
    tf_write_file(dir, "b_loop_pcall.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function()\n"
               "    for i = 1, 1e9 do pcall(function() while true do end end) end\n"
               "    return true\n"
               "  end }\n");
    tf_write_file(dir, "c_loop_xpcall.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function()\n"
               "    local ok = xpcall(function() while true do end end,\n"
               "                      function(m) while true do end end)\n"
               "    return true, 'escaped'\n"
               "  end }\n");
    tf_write_file(dir, "d_loop_load.lua",
               "while true do end\n");
    tf_write_file(dir, "e_recursion.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function() local function f(n) return 1 + f(n + 1) end return f(1) end }\n");
    tf_write_file(dir, "z_ok.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function(study) return #study.series == 2, 'still here' end }\n");
    rc = ar_engine_load_rules_dir(e, dir, err, sizeof err);
    CHECK(rc == 0, "load: %s", err);
    x = NULL;
    {
        long t = rule_index(e, "d_loop_load");
        CHECK(t >= 0 && !ar_engine_rule(e, (size_t)t)->ok &&
                  has(ar_engine_rule(e, (size_t)t)->error, "exceeded instruction budget") &&
                  has(ar_engine_rule(e, (size_t)t)->error, "d_loop_load.lua"),
              "loop at load time stopped: %s", t >= 0 ? ar_engine_rule(e, (size_t)t)->error : "?");
    }
    CHECK(set_fixture(e, "study_ct_two_series.json") == 0, "fixture");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    printf("# runaway rules stopped in %.1f ms\n", ms_since(&t0));
    CHECK(rc == 0 && n == 5, "evaluate: rc=%d n=%zu %s", rc, n, err);
    x = verdict(e, v, n, "a_loop");
    CHECK(x && x->error && has(x->reason, "rule a_loop: exceeded instruction budget"),
          "while true stopped: %s", x ? x->reason : "?");
    CHECK(x && has(x->reason, "a_loop.lua:2"), "stop names the line: %s", x ? x->reason : "?");
    x = verdict(e, v, n, "b_loop_pcall");
    CHECK(x && x->error && has(x->reason, "rule b_loop_pcall: exceeded instruction budget"),
          "pcall can't swallow the stop: %s", x ? x->reason : "?");
    x = verdict(e, v, n, "c_loop_xpcall");
    CHECK(x && x->error && !x->matched && has(x->reason, "exceeded instruction budget"),
          "xpcall handler can't swallow the stop: %s", x ? x->reason : "?");
    x = verdict(e, v, n, "e_recursion");
    CHECK(x && x->error, "infinite recursion is an error: %s", x ? x->reason : "?");
    x = verdict(e, v, n, "z_ok");
    CHECK(x && x->matched && !x->error && has(x->reason, "still here"),
          "the other rules still evaluate: %s", x ? x->reason : "?");
    free(v);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);

    /* Wall clock: a huge instruction budget, a short deadline. */
    e = engine(1000000000000LL, 150, 0, NULL);
    rc = ar_engine_load_rules_dir(e, dir, err, sizeof err);
    CHECK(set_fixture(e, "study_ct_two_series.json") == 0, "fixture");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    {
        double ms = ms_since(&t0);
        printf("# deadline runs took %.0f ms\n", ms);
    }
    x = verdict(e, v, n, "a_loop");
    CHECK(x && x->error && has(x->reason, "rule a_loop: timeout (150 ms)"), "timeout: %s",
          x ? x->reason : "?");
    x = verdict(e, v, n, "b_loop_pcall");
    CHECK(x && x->error && has(x->reason, "timeout"), "timeout through pcall: %s",
          x ? x->reason : "?");
    x = verdict(e, v, n, "z_ok");
    CHECK(x && x->matched, "others still fine after timeouts");
    free(v);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

static void test_memory(void)
{
    ar_engine *e = engine(0, 10000, 32, NULL);
    char *dir = tf_new_dir("ar-engine");
    char err[1024];
    ar_verdict *v = NULL;
    size_t n = 0, before;
    const ar_verdict *x;
    int rc;

    tf_write_file(dir, "bomb_table.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function() local t = {} for i = 1, 1e9 do t[i] = {i} end return true end }\n");
    tf_write_file(dir, "bomb_string.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function() local s = 'x' while true do s = s .. s end end }\n");
    tf_write_file(dir, "bomb_pcall.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function()\n"
               "    local ok, e = pcall(function() local t = {} for i = 1, 1e9 do t[i] = i .. '' end end)\n"
               "    return not ok, tostring(e)\n"
               "  end }\n");
    tf_write_file(dir, "bomb_global.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function() hoard = {} for i = 1, 1e9 do hoard[i] = {i} end end }\n");
    tf_write_file(dir, "fine.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function(study) return study.tags.StudyID == '4242' end }\n");
    /* 18 MB live, 200 MB of garbage: the heap meets the cap, Lua's emergency
     * collection makes room, and that is not an error. */
    tf_write_file(dir, "near_cap.lua",
               "return { check_on = 'study', action = 'download',\n"
               "  match = function()\n"
               "    local keep = {}\n"
               "    for i = 1, 18 do keep[i] = string.rep('k', 1000000 - i) end\n"
               "    for i = 1, 200 do local g = string.rep('g', 1000000 - i) end\n"
               "    return #keep == 18 end }\n");
    rc = ar_engine_load_rules_dir(e, dir, err, sizeof err);
    CHECK(rc == 0, "load: %s", err);
    CHECK(set_fixture(e, "study_ct_two_series.json") == 0, "fixture");
    before = ar_engine_memory_used(e);
    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    CHECK(rc == 0 && n == 6, "evaluate: %s", err);
    x = verdict(e, v, n, "near_cap");
    CHECK(x && x->matched && !x->error, "close to the cap but within it: %s", x ? x->reason : "?");
    x = verdict(e, v, n, "bomb_table");
    CHECK(x && x->error && has(x->reason, "rule bomb_table: not enough memory"), "table bomb: %s",
          x ? x->reason : "?");
    x = verdict(e, v, n, "bomb_string");
    CHECK(x && x->error && has(x->reason, "not enough memory"), "string bomb: %s",
          x ? x->reason : "?");
    x = verdict(e, v, n, "bomb_pcall");
    CHECK(x && x->error && !x->matched && has(x->reason, "rule bomb_pcall: not enough memory"),
          "a rule can't swallow its own memory error: %s", x ? x->reason : "?");
    x = verdict(e, v, n, "bomb_global");
    CHECK(x && x->error && has(x->reason, "not enough memory"), "global bomb: %s",
          x ? x->reason : "?");
    x = verdict(e, v, n, "fine");
    CHECK(x && x->matched && !x->error, "engine survives, other rules run: %s",
          x ? x->reason : "?");
    printf("# memory: %zu KB before the bombs, %zu KB after\n", before / 1024,
           ar_engine_memory_used(e) / 1024);
    free(v);
    /* The study can still be replaced and evaluated. */
    CHECK(set_fixture(e, "study_ct_two_series.json") == 0, "fixture after bombs");
    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    x = verdict(e, v, n, "fine");
    CHECK(rc == 0 && x && x->matched, "second round fine");
    free(v);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

/* ---- loading ------------------------------------------------------------------ */

static void test_loading(void)
{
    ar_engine *e = engine(0, 0, 0, NULL);
    char *dir = tf_new_dir("ar-engine");
    char err[1024];
    long i;
    const ar_rule_info *r;
    char *src = NULL;
    int rc;

    tf_write_file(dir, "broken.lua",
               "return {\n  check_on = 'study',\n  match = function(study\n}\n");
    tf_write_file(dir, "bad_json.json",
               "{\n  \"CheckOn\": \"Study\",\n  \"Action\" \"DOWNLOAD\"\n}\n");
    tf_write_file(dir, "bad_value.json",
               "{\"CheckOn\": \"Sometimes\", \"Action\": \"DOWNLOAD\", \"IsActive\": true, \"Tags\": []}\n");
    tf_write_file(dir, "no_match.lua", "return { check_on = 'study', action = 'download' }\n");
    tf_write_file(dir, "bad_check_on.lua",
               "return { check_on = 'Study', action = 'download', match = function() end }\n");
    tf_write_file(dir, "no_dest.lua",
               "return { check_on = 'study', action = 'forward', match = function() end }\n");
    tf_write_file(dir, "typo.lua",
               "return { check_on = 'study', action = 'download', match = function() end,\n"
               "  file_names = function() end }\n");
    tf_write_file(dir, "bad_hook.lua",
               "return { check_on = 'study', action = 'download', match = function() end, name = 'x' }\n");
    tf_write_file(dir, "runtime.lua", "local x = nil\nreturn x.y\n");
    tf_write_file(dir, "forward.lua",
               "return { check_on = 'series', action = 'forward', destination = 'PACS',\n"
               "  active = false, comment = 'c', match = function() return true end }\n");
    tf_write_file(dir, "good.json",
               "{\"CheckOn\": \"Study\", \"IsActive\": true, \"Action\": \"DOWNLOAD\",\n"
               " \"Tags\": [{\"TagName\": \"StudyDescription\", \"Level\": \"Study\", \"Value\": \"brain\"}]}\n");
    tf_write_file(dir, "good.lua",
               "return { check_on = 'study', action = 'download', match = function() return true end }\n");
    tf_write_file(dir, "master.json", "garbage");
    tf_write_file(dir, "my_template.json", "garbage");
    tf_write_file(dir, "notes.txt", "garbage");
    tf_write_file(dir, ".hidden.lua", "garbage");

    rc = ar_engine_load_rules_dir(e, dir, err, sizeof err);
    CHECK(rc == 0, "load dir: %s", err);
    CHECK_INT(ar_engine_rule_count(e), 12);
    CHECK(rule_index(e, "master") < 0 && rule_index(e, "my_template") < 0 &&
              rule_index(e, "notes") < 0 && rule_index(e, ".hidden") < 0,
          "master*, *template*, other files and hidden files are skipped");
    /* Sorted by file name. */
    CHECK_STR(ar_engine_rule(e, 0)->name, "bad_check_on");

#define RULE_ERR(name_, want1, want2)                                                           \
    do {                                                                                       \
        i = rule_index(e, name_);                                                              \
        r = i >= 0 ? ar_engine_rule(e, (size_t)i) : NULL;                                      \
        CHECK(r && !r->ok && has(r->error, want1) && has(r->error, want2), "%s: %s", name_,    \
              r ? r->error : "(missing)");                                                     \
    } while (0)
    RULE_ERR("broken", "broken.lua:4:", "expected");
    RULE_ERR("bad_json", "bad_json.json:3:", "invalid JSON");
    RULE_ERR("bad_value", "bad_value.json", "CheckOn");
    RULE_ERR("no_match", "no_match.lua", "match must be a function");
    RULE_ERR("bad_check_on", "bad_check_on.lua", "check_on must be \"study\" or \"series\"");
    RULE_ERR("no_dest", "no_dest.lua", "destination");
    RULE_ERR("typo", "typo.lua", "unknown field \"file_names\"");
    RULE_ERR("bad_hook", "bad_hook.lua", "name must be a function");
    RULE_ERR("runtime", "runtime.lua:2:", "attempt to index a nil value");

    i = rule_index(e, "forward");
    r = i >= 0 ? ar_engine_rule(e, (size_t)i) : NULL;
    CHECK(r && r->ok, "forward rule loads: %s", r ? r->error : "?");
    if (r && r->ok) {
        CHECK_STR(r->check_on, "series");
        CHECK_STR(r->action, "forward");
        CHECK_STR(r->destination, "PACS");
        CHECK_STR(r->kind, "lua");
        CHECK_INT(r->active, 0);
    }
    i = rule_index(e, "good");
    r = i >= 0 ? ar_engine_rule(e, (size_t)i) : NULL;
    CHECK(r && r->ok && strcmp(r->kind, "json") == 0 && r->active, "good.json loads: %s",
          r ? r->error : "?");
    if (r && r->ok) {
        CHECK(ar_engine_rule_source(e, (size_t)i, &src, err, sizeof err) == 0 &&
                  has(src, "check_on = \"study\""),
              "compiled source: %s", src ? src : err);
        free(src);
        src = NULL;
    }
    i = rule_index(e, "broken");
    CHECK(i >= 0 && ar_engine_rule_source(e, (size_t)i, &src, err, sizeof err) == 0 &&
              has(src, "match = function(study"),
          "a broken Lua rule's source is still its file");
    free(src);

    /* Explicit files; a missing one is a broken rule, not a failure. */
    {
        char p1[512], p2[512];
        const char *files[2];
        snprintf(p1, sizeof p1, "%s/good.lua", dir);
        snprintf(p2, sizeof p2, "%s/missing.lua", dir);
        files[0] = p1;
        files[1] = p2;
        rc = ar_engine_load_rule_files(e, files, 2, err, sizeof err);
        CHECK(rc == 0 && ar_engine_rule_count(e) == 2 && ar_engine_rule(e, 0)->ok &&
                  !ar_engine_rule(e, 1)->ok && has(ar_engine_rule(e, 1)->error, "missing.lua"),
              "explicit files: %s", ar_engine_rule_count(e) > 1 ? ar_engine_rule(e, 1)->error : err);
    }
    /* A folder that can't be read keeps the rules we have. */
    rc = ar_engine_load_rules_dir(e, "/nonexistent/rules", err, sizeof err);
    CHECK(rc != 0 && has(err, "/nonexistent/rules") && ar_engine_rule_count(e) == 2,
          "unreadable folder: %s", err);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

/* ---- naming hooks, print, on_exported, series rules ---------------------------- */

typedef struct printed {
    char rule[64];
    char line[256];
    int n;
} printed;

static void capture_print(void *ud, const char *rule, const char *line)
{
    printed *p = ud;
    snprintf(p->rule, sizeof p->rule, "%s", rule ? rule : "");
    snprintf(p->line, sizeof p->line, "%s", line);
    p->n++;
}

static void test_hooks(void)
{
    ar_engine *e = engine(0, 0, 0, NULL);
    char *dir = tf_new_dir("ar-engine");
    char sub[600], err[1024];
    ar_verdict *v = NULL;
    size_t n = 0;
    const ar_verdict *x;
    printed pr;
    ar_plan p;
    long i;
    int rc;

    memset(&pr, 0, sizeof pr);
    ar_engine_set_print(e, capture_print, &pr);
    snprintf(sub, sizeof sub, "%s/hooks", dir);
    mkdir(sub, 0700);
    tf_write_file(sub, "names.lua",
               "return { name = function(study) return 'ACC_' .. study.tags.StudyDate end,\n"
               "  file_name = function(study, series, inst)\n"
               "    return string.format('%05d.dcm', tonumber(inst.tags.InstanceNumber)) end }\n");
    tf_write_file(dir, "hooked.json",
               "{\"CheckOn\": \"Study\", \"IsActive\": true, \"Action\": \"DOWNLOAD\", \"Tags\": [],\n"
               " \"NamingHook\": \"hooks/names.lua\"}\n");
    tf_write_file(dir, "exported.lua",
               "local exported_path\n"
               "return { check_on = 'study', action = 'download',\n"
               "  match = function(study) print('seen', #study.series, nil) return true, exported_path or 'none' end,\n"
               "  on_exported = function(study, path) exported_path = path end }\n");
    tf_write_file(dir, "series_two.lua",
               "return { check_on = 'series', action = 'download',\n"
               "  match = function(study, series) return series.tags.SeriesNumber == '2', series.id end }\n");
    rc = ar_engine_load_rules_dir(e, dir, err, sizeof err);
    CHECK(rc == 0, "load: %s", err);
    i = rule_index(e, "hooked");
    CHECK(i >= 0 && ar_engine_rule(e, (size_t)i)->ok, "JSON rule with a NamingHook: %s",
          i >= 0 ? ar_engine_rule(e, (size_t)i)->error : "?");
    CHECK(set_fixture(e, "study_ct_two_series.json") == 0, "fixture");

    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    CHECK(rc == 0 && n == 2, "study rules only: n=%zu %s", n, err);
    x = verdict(e, v, n, "exported");
    CHECK(x && x->matched && strcmp(x->reason, "none") == 0, "before on_exported: %s",
          x ? x->reason : "?");
    CHECK(pr.n == 1 && strcmp(pr.rule, "exported") == 0 && strcmp(pr.line, "seen\t2\tnil") == 0,
          "print goes to the sink with the rule name: '%s' '%s'", pr.rule, pr.line);
    free(v);
    i = rule_index(e, "exported");
    rc = ar_engine_on_exported(e, g_st, (size_t)i, NULL, "/storage/exported/x", err, sizeof err);
    CHECK(rc == 0, "on_exported: %s", err);
    rc = ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err);
    x = verdict(e, v, n, "exported");
    CHECK(x && strcmp(x->reason, "/storage/exported/x") == 0, "on_exported ran: %s",
          x ? x->reason : "?");
    free(v);

    rc = ar_engine_evaluate(e, g_st, NULL, 1, &v, &n, err, sizeof err);
    CHECK(rc == 0 && n == 4, "all levels: n=%zu", n);
    free(v);
    rc = ar_engine_evaluate(e, g_st, "415dc16e-0d3f8ae5-3e8aabef-33ed2e01-982e00ae", 0, &v, &n, err,
                            sizeof err);
    CHECK(rc == 0 && n == 1 && v[0].matched &&
              strcmp(v[0].series_id, "415dc16e-0d3f8ae5-3e8aabef-33ed2e01-982e00ae") == 0,
          "one series: n=%zu %s", n, n ? v[0].reason : err);
    free(v);
    rc = ar_engine_evaluate(e, g_st, "nope", 0, &v, &n, err, sizeof err);
    CHECK(rc == AR_ENOTFOUND, "unknown series: rc=%d %s", rc, err);

    i = rule_index(e, "hooked");
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc == 0, "plan with hook: %s", err);
    if (rc == 0) {
        CHECK_STR(p.folder, "hooked/ACC_20240131");
        CHECK_INT(p.n, 3);
        if (p.n == 3) {
            CHECK_STR(p.files[0].rel_path, "SE1-20240131-1.2.3.4.5.1/00001.dcm");
            CHECK_STR(p.files[2].rel_path, "SE2-20240132-1.2.3.4.5.2/00003.dcm");
        }
        ar_plan_free(&p);
    }
    i = rule_index(e, "series_two");
    rc = ar_engine_plan(e, g_st, (size_t)i, "415dc16e-0d3f8ae5-3e8aabef-33ed2e01-982e00ae", &p, err,
                        sizeof err);
    CHECK(rc == 0, "series plan: %s", err);
    if (rc == 0) {
        CHECK_STR(p.folder, "series_two/PID_01-DOE-EX4242-SE2");
        CHECK_INT(p.n, 1);
        if (p.n == 1) {
            CHECK_STR(p.files[0].rel_path, "SE2-20240132-1.2.3.4.5.2/1.2.3.4.5.2.3.dcm");
            CHECK_STR(p.files[0].instance_id, "dfb5e1d1-e140a1c7-ad3b1f96-8d0edc4e-92802350");
        }
        CHECK_INT(p.total_bytes, 568);
        ar_plan_free(&p);
    }
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc != 0, "a series rule needs a series: %s", err);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

/* ---- plans -------------------------------------------------------------------- */

static void test_plans(void)
{
    ar_engine *e = engine(0, 0, 0, NULL);
    char *dir = tf_new_dir("ar-engine");
    char err[1024];
    ar_plan p;
    size_t k;
    long i;
    int rc;

    tf_write_file(dir, "r1.lua",
               "return { check_on = 'study', action = 'download', match = function() return true end }\n");
    tf_write_file(dir, "hostile.lua",
               "return { check_on = 'study', action = 'download', match = function() return true end,\n"
               "  name = function(study) return { '..', 'a/b', study.patient.PatientID, '' } end,\n"
               "  series_name = function(study, series) return 'x/../y/' .. series.tags.SeriesDescription end,\n"
               "  file_name = function(study, series, inst) return '../../evil\\1' .. inst.id .. '.dcm' end }\n");
    tf_write_file(dir, "long.lua",
               "return { check_on = 'study', action = 'download', match = function() return true end,\n"
               "  name = function() return { string.rep('a', 300), string.rep('\\u{e9}', 300) } end,\n"
               "  file_name = function() return string.rep('f', 300) .. '.dcm' end }\n");
    tf_write_file(dir, "badname.lua",
               "return { check_on = 'study', action = 'download', match = function() return true end,\n"
               "  name = function(study) return { {} } end }\n");
    rc = ar_engine_load_rules_dir(e, dir, err, sizeof err);
    CHECK(rc == 0, "load: %s", err);

    /* Original layout on a real study. */
    CHECK(set_fixture(e, "study_ct_two_series.json") == 0, "fixture");
    i = rule_index(e, "r1");
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc == 0, "plan: %s", err);
    if (rc == 0) {
        CHECK_STR(p.folder, "r1/PID_01-DOE-EX4242");
        CHECK_INT(p.n, 3);
        CHECK_INT(p.total_bytes, 3 * 568);
        if (p.n == 3) {
            CHECK_STR(p.files[0].rel_path, "SE1-20240131-1.2.3.4.5.1/1.2.3.4.5.1.1.dcm");
            CHECK_STR(p.files[0].instance_id, "1d621143-69677899-6f001891-a72a2053-82707e7c");
            CHECK_STR(p.files[1].rel_path, "SE1-20240131-1.2.3.4.5.1/1.2.3.4.5.1.2.dcm");
            CHECK_STR(p.files[2].rel_path, "SE2-20240132-1.2.3.4.5.2/1.2.3.4.5.2.3.dcm");
            CHECK_INT(p.files[2].size, 568);
        }
        ar_plan_free(&p);
    }

    /* Fallbacks. */
    CHECK(set_fixture(e, "study_missing_tags.json") == 0, "fixture missing tags");
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc == 0, "plan: %s", err);
    if (rc == 0) {
        CHECK_STR(p.folder, "r1/NoPID-UNKNOWN-EXUNKNOWN");
        CHECK(p.n == 1 && strcmp(p.files[0].rel_path,
                                 "SEXX-UNKNOWN-1.2.826.0.1.1.2/1.2.826.0.1.1.2.1.dcm") == 0,
              "series fallback: %s", p.n ? p.files[0].rel_path : "(none)");
        ar_plan_free(&p);
    }

    /* Hostile values: default layout and hooks, all sanitised. */
    CHECK(set_fixture(e, "study_hostile.json") == 0, "fixture hostile");
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc == 0, "plan: %s", err);
    if (rc == 0) {
        CHECK(safe_path(p.folder), "safe folder: %s", p.folder);
        CHECK_STR(p.folder, "r1/.._.._etc_passwd-.._..-EX"); /* trailing dots trimmed */
        for (k = 0; k < p.n; k++)
            CHECK(safe_path(p.files[k].rel_path), "safe file: %s", p.files[k].rel_path);
        CHECK_INT(p.n, 2);
        if (p.n == 2) {
            CHECK_STR(p.files[0].rel_path, "SE1_2-UNKNOWN-/...dcm");
            CHECK_STR(p.files[1].rel_path, "SE1_2-UNKNOWN-/a_b.WORKING.dcm");
        }
        ar_plan_free(&p);
    }
    i = rule_index(e, "hostile");
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc == 0, "plan: %s", err);
    if (rc == 0) {
        CHECK(safe_path(p.folder), "safe folder: %s", p.folder);
        CHECK_STR(p.folder, "hostile/UNKNOWN/a_b/.._.._etc_passwd/UNKNOWN");
        for (k = 0; k < p.n; k++)
            CHECK(safe_path(p.files[k].rel_path), "safe file: %s", p.files[k].rel_path);
        if (p.n == 2)
            CHECK_STR(p.files[0].rel_path,
                      "x/UNKNOWN/y/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/UNKNOWN/UNKNOWN/"
                      "evil_iiiiiiii-aaaaaaaa-22222222-33333333-44444444.dcm");
        ar_plan_free(&p);
    }
    i = rule_index(e, "long");
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc == 0, "plan: %s", err);
    if (rc == 0) {
        const char *last = strrchr(p.folder, '/');
        size_t k2;
        CHECK(safe_path(p.folder), "long folder safe");
        CHECK(strncmp(p.folder, "long/", 5) == 0 && strcspn(p.folder + 5, "/") == 255,
              "inner components up to 255 bytes: %s", p.folder);
        /* Room for core/export's ".OLD.WORKING" beside the final folder,
         * cut on a UTF-8 boundary (2-byte characters: 242 bytes). */
        CHECK(last && strlen(last + 1) <= 243 && strlen(last + 1) % 2 == 0,
              "last folder component %zu bytes", last ? strlen(last + 1) : 0);
        for (k2 = 0; k2 < p.n; k2++)
            CHECK(strlen(strrchr(p.files[k2].rel_path, '/') + 1) <= 255, "file name length");
        ar_plan_free(&p);
    }
    i = rule_index(e, "badname");
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc != 0 && has(err, "rule badname") && has(err, "component 1"), "bad hook answer: %s",
          err);

    /* Duplicates get a deterministic suffix, never another file's name. */
    CHECK(set_fixture(e, "study_duplicates.json") == 0, "fixture duplicates");
    i = rule_index(e, "r1");
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc == 0 && p.n == 3, "plan: %s", err);
    if (rc == 0 && p.n == 3) {
        CHECK_STR(p.folder, "r1/P7-ROE-EX7");
        CHECK_STR(p.files[0].rel_path, "SE10-20240131-1.9/1.9.1.dcm");
        CHECK_STR(p.files[0].instance_id, "iiiiiiii-00000001-22222222-33333333-44444444");
        CHECK_STR(p.files[1].rel_path, "SE10-20240131-1.9/1.9.1_2.dcm");
        CHECK_STR(p.files[2].rel_path, "SE10-20240131-1.9/1.9.1_3.dcm");
        CHECK_STR(p.files[2].instance_id, "iiiiiiii-00000003-22222222-33333333-44444444");
    }
    if (rc == 0)
        ar_plan_free(&p);

    /* An empty study is an empty plan. */
    CHECK(set_fixture(e, "study_empty.json") == 0, "fixture empty");
    rc = ar_engine_plan(e, g_st, (size_t)i, NULL, &p, err, sizeof err);
    CHECK(rc == 0 && p.n == 0 && p.total_bytes == 0, "empty plan: %s", err);
    if (rc == 0) {
        CHECK_STR(p.folder, "r1/E1-EMPTY-EX1");
        ar_plan_free(&p);
    }
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

/* ---- overlay and performance ------------------------------------------------ */

static void test_overlay(void)
{
    char *lua = tf_new_dir("ar-engine");
    char *dir = tf_new_dir("ar-engine");
    char err[1024];
    ar_verdict *v = NULL;
    size_t n = 0;
    ar_engine *e;

    tf_write_file(lua, "prelude.lua", "return { greet = function() return 'from overlay' end }\n");
    e = engine(0, 0, 0, lua);
    tf_write_file(dir, "g.lua",
               "return { check_on = 'study', action = 'download', match = function() return true, greet() end }\n");
    CHECK(ar_engine_load_rules_dir(e, dir, err, sizeof err) == 0, "load");
    CHECK(set_fixture(e, "study_empty.json") == 0, "fixture");
    CHECK(ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err) == 0 && n == 1 &&
              strcmp(v[0].reason, "from overlay") == 0,
          "lua_dir overlays an embedded module: %s", n ? v[0].reason : err);
    free(v);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(lua);
    tf_rm_tree(dir);
}

static void test_performance(void)
{
    ar_engine *e = engine(0, 0, 0, NULL);
    char *dir = tf_new_dir("ar-engine");
    char err[1024], name[64], text[1024];
    static const char *desc[] = {"brain", "Slash", "knee", "With"};
    static const char *mod[] = {"CT", "MR", "ct", "PT"};
    ar_verdict *v = NULL;
    size_t n = 0, k, matched = 0, errors = 0;
    double best = 1e9, loadms;
    struct timespec t0;
    int round;

    for (k = 0; k < 1000; k++) {
        snprintf(name, sizeof name, "rule%04zu.json", k);
        snprintf(text, sizeof text,
                 "{\"CheckOn\": \"Study\", \"IsActive\": true, \"Action\": \"DOWNLOAD\",\n"
                 " \"Tags\": [{\"TagName\": \"StudyDescription\", \"Level\": \"Study\", \"Value\": \"%s\"},\n"
                 "          {\"TagName\": \"Modality\", \"Level\": \"Series\", \"Value\": \"%s\"},\n"
                 "          {\"TagName\": \"PatientID\", \"Level\": \"Patient\", \"Value\": \"PID\"}]}\n",
                 desc[k % 4], mod[(k / 4) % 4]);
        tf_write_file(dir, name, text);
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(ar_engine_load_rules_dir(e, dir, err, sizeof err) == 0 &&
              ar_engine_rule_count(e) == 1000,
          "1000 rules load: %s", err);
    loadms = ms_since(&t0);
    for (k = 0; k < ar_engine_rule_count(e); k++)
        if (!ar_engine_rule(e, k)->ok) {
            CHECK(0, "rule %zu: %s", k, ar_engine_rule(e, k)->error);
            break;
        }
    CHECK(set_fixture(e, "study_ct_two_series.json") == 0, "fixture");
    for (round = 0; round < 5; round++) {
        double ms;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (ar_engine_evaluate(e, g_st, NULL, 0, &v, &n, err, sizeof err) != 0)
            break;
        ms = ms_since(&t0);
        if (ms < best)
            best = ms;
        if (round < 4)
            free(v);
    }
    CHECK(n == 1000, "1000 verdicts (%zu) %s", n, err);
    for (k = 0; k < n; k++) {
        matched += v[k].matched;
        errors += v[k].error;
    }
    /* "Brain^With/Slash", CT, case-insensitive contains: desc brain/Slash/With
     * x modality CT/ct -> 6 of the 16 combinations. */
    CHECK_INT(matched, 375);
    CHECK_INT(errors, 0);
    free(v);
    printf("# 1000 JSON rules: loaded in %.0f ms, evaluated in %.2f ms (best of 5), "
           "engine holds %zu KB\n", loadms, best, ar_engine_memory_used(e) / 1024);
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

/* A fixture of one study with n instances in one series (minimal tags). */
static char *big_fixture(size_t n, size_t *len)
{
    size_t cap = 4096 + n * 400, o = 0;
    char *s = malloc(cap);
    if (!s)
        exit(2);
    o += (size_t)snprintf(s + o, cap - o,
        "{\"study\": {\"ID\": \"big-study\", \"MainDicomTags\": {\"StudyInstanceUID\": \"1.2.3\","
        " \"StudyDate\": \"20241201\", \"StudyID\": \"7\"}, \"PatientMainDicomTags\":"
        " {\"PatientID\": \"BIG\", \"PatientName\": \"BIG^STUDY\"}, \"Series\": [\"big-series\"]},"
        " \"series\": [{\"ID\": \"big-series\", \"MainDicomTags\": {\"SeriesInstanceUID\": \"1.2.3.1\","
        " \"SeriesNumber\": \"1\", \"Modality\": \"MR\"}, \"ParentStudy\": \"big-study\","
        " \"Instances\": []}], \"instances\": [");
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o,
            "%s{\"ID\": \"i%zu\", \"FileSize\": 1000, \"ParentSeries\": \"big-series\","
            " \"MainDicomTags\": {\"InstanceNumber\": \"%zu\", \"SOPInstanceUID\": \"1.2.3.1.%zu\"}}",
            i ? ", " : "", i, i + 1, i + 1);
    o += (size_t)snprintf(s + o, cap - o, "]}");
    *len = o;
    return s;
}

/* Planning a big study: every hook call (here a FileNaming template, one
 * call per file) has its own budget, so the plan does not fail at ~12,000
 * instances with "exceeded instruction budget"; a runaway hook is still
 * stopped.  100,000 instances, read from a fixture file, fit the default
 * memory cap (64 MB): the snapshot is compact C memory and the plan's names
 * are handed to C one by one. */
static void test_big_plan(void)
{
    /* a budget a whole plan of 100,000 files would exceed many times over,
     * as the default one is for bigger studies and heavier hooks */
    ar_engine *e = engine(300000, 0, 0, NULL);
    char *dir = tf_new_dir("ar-bigplan");
    char err[1024], path[4096];
    ar_plan p;
    size_t len, n = 100000;
    tf_write_file(dir, "named.json",
                  "{\"CheckOn\": \"Study\", \"IsActive\": true, \"Action\": \"DOWNLOAD\","
                  " \"Tags\": [], \"FileNaming\": \"IM{InstanceNumber:06}-{SOPInstanceUID}.dcm\"}");
    tf_write_file(dir, "loops.lua",
                  "return { check_on = 'study', action = 'download', match = function() return true end,\n"
                  "  file_name = function(study, series, inst) while true do end end }\n");
    CHECK(ar_engine_load_rules_dir(e, dir, err, sizeof err) == 0, "load: %s", err);
    char *fx = big_fixture(n, &len);
    FILE *f;
    snprintf(path, sizeof path, "%s/big.fixture", dir);
    f = fopen(path, "wb");
    CHECK(f && fwrite(fx, 1, len, f) == len && fclose(f) == 0, "write %s", path);
    free(fx);
    int rc = (ar_study_free(g_st), g_st = NULL,
              ar_engine_set_study_fixture_file(e, path, &g_st, err, sizeof err));
    CHECK(rc == 0, "a %zu-instance fixture at the default memory cap: %s", n, err);
    if (rc == 0) {
        rc = ar_engine_plan(e, g_st, (size_t)rule_index(e, "named"), NULL, &p, err, sizeof err);
        CHECK(rc == 0, "FileNaming on %zu instances: %s", n, err);
        if (rc == 0) {
            CHECK_INT(p.n, n);
            /* in InstanceNumber order (numeric: 100000 after 99999) */
            CHECK_STR(p.files[0].rel_path, "SE1-UNKNOWN-1.2.3.1/IM000001-1.2.3.1.1.dcm");
            CHECK_STR(p.files[n - 1].rel_path, "SE1-UNKNOWN-1.2.3.1/IM100000-1.2.3.1.100000.dcm");
            CHECK_STR(p.files[n - 1].instance_id, "i99999");
            CHECK(p.total_bytes == 1000LL * (long long)n, "total bytes %lld", p.total_bytes);
            ar_plan_free(&p);
        }
        rc = ar_engine_plan(e, g_st, (size_t)rule_index(e, "loops"), NULL, &p, err, sizeof err);
        CHECK(rc == AR_ERULE && strstr(err, "exceeded instruction budget"),
              "a runaway file_name hook is still stopped: %s", err);
    }
    ar_study_free(g_st);
    g_st = NULL;
    ar_engine_free(e);
    tf_rm_tree(dir);
}

int main(void)
{
    find_datadir();
    test_study();
    test_mutations();
    test_sandbox();
    test_runaway();
    test_memory();
    test_loading();
    test_hooks();
    test_plans();
    test_big_plan();
    test_overlay();
    test_performance();
    return tap_done();
}
