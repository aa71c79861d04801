/* snapshot.c - see snapshot.h.
 *
 * One builder takes the parts in turn (each through its own yajl handle):
 * events are placed by their depth relative to where the part's value
 * begins (`base`):
 *   study      rel 0 the object, rel 1 its fields, rel 2 a tags object
 *   series     rel 0 the list, rel 1 an object, rel 2 fields, rel 3 tags
 *   instances  the same as series
 * In a fixture, the top object's keys "study", "series" and "instances"
 * start those parts at base 1.  A value nobody reads is skipped whole
 * (`skip` is the depth of the container being skipped).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "arena.h"
#include "err.h"
#include "snapshot.h"

enum { P_NONE, P_STUDY, P_SERIES, P_INSTANCES, P_FIXTURE };
enum { T_NULL, T_BOOL, T_NUM, T_STR, T_MAP, T_LIST };
enum {
    F_OTHER, F_ID, F_TAGS, F_PATIENT, F_LAST_UPDATE, F_IS_STABLE, F_PARENT, F_SIZE
};

#define MAX_NAMES 65535u

/* ---- string interning (tag names, series ids) ----------------------------- */

typedef struct intern {
    const char **str;
    size_t *len;
    uint32_t *slot;          /* hash -> index + 1, 0 = empty */
    size_t n, cap, nslots;
} intern;

static size_t hash_bytes(const char *s, size_t len)
{
    size_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* index of s, adding it (copied into a) when new; -1 out of memory */
static long intern_get(intern *t, ar_arena *a, const char *s, size_t len, int add)
{
    size_t i;
    if (t->n * 2 >= t->nslots) {
        size_t ns = t->nslots ? t->nslots * 2 : 64, k;
        uint32_t *slot = calloc(ns, sizeof *slot);
        if (!slot)
            return -1;
        for (k = 0; k < t->n; k++) {
            i = hash_bytes(t->str[k], t->len[k]) & (ns - 1);
            while (slot[i])
                i = (i + 1) & (ns - 1);
            slot[i] = (uint32_t)k + 1;
        }
        free(t->slot);
        t->slot = slot;
        t->nslots = ns;
    }
    i = hash_bytes(s, len) & (t->nslots - 1);
    while (t->slot[i]) {
        uint32_t k = t->slot[i] - 1;
        if (t->len[k] == len && memcmp(t->str[k], s, len) == 0)
            return (long)k;
        i = (i + 1) & (t->nslots - 1);
    }
    if (!add)
        return -2;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        const char **ns = realloc(t->str, cap * sizeof *ns);
        size_t *nl;
        if (!ns)
            return -1;
        t->str = ns;
        nl = realloc(t->len, cap * sizeof *nl);
        if (!nl)
            return -1;
        t->len = nl;
        t->cap = cap;
    }
    t->str[t->n] = ar_arena_strndup(a, s, len);
    if (!t->str[t->n])
        return -1;
    t->len[t->n] = len;
    t->slot[i] = (uint32_t)t->n + 1;
    return (long)t->n++;
}

static size_t intern_bytes(const intern *t)
{
    return t->cap * (sizeof *t->str + sizeof *t->len) + t->nslots * sizeof *t->slot;
}

static void intern_free(intern *t)
{
    free(t->str);
    free(t->len);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

/* ---- the builder ------------------------------------------------------------ */

typedef struct pending_instance {
    ar_snap_instance inst;
    uint32_t parent;         /* index into b->ids */
} pending_instance;

typedef struct series_build {
    ar_snap_series s;
    uint32_t idx;            /* index into b->ids */
} series_build;

typedef struct builder {
    ar_snapshot *snap;
    ar_arena arena;
    size_t limit;
    const char *fixture;     /* its name when parsing a fixture, else NULL */
    int part;                /* P_* being parsed */
    int base;                /* depth where the part's value appears */
    int depth;               /* open containers */
    int skip;                /* >0: skipping the container opened at this depth */
    int pending_part;        /* fixture: the part the next value starts */
    int list_as_map;         /* an object where a list belongs: only {} is one */
    int tags_as_list;        /* a list where a tags object belongs: only [] is one */
    int field;               /* F_* of the entity's current key */
    int seen[P_FIXTURE];     /* parts met */
    size_t index;            /* 1-based index in the part's list */
    char key[256];           /* the current tag name (truncated copy) */
    size_t keylen;
    /* the entity being read */
    int has_id, has_parent;
    const char *e_id;
    const char *e_id_type;   /* Lua type name of a non-string ID */
    const char *e_parent_type;
    char *parent;            /* ParentSeries (malloc'ed buffer) */
    size_t parent_len, parent_cap;
    long long e_size;
    ar_snap_tags *e_tags;    /* where tags being read go */
    ar_snap_tags e_tagset, e_patient;
    uint32_t tag_gen;        /* generation of the tags object being read */
    uint32_t *name_gen, *name_slot; /* per name: last generation and pool slot */
    /* what is collected */
    ar_snap_tag *tags;
    size_t ntags, captags;
    series_build *series;
    size_t nseries, capseries;
    pending_instance *inst;
    size_t ninst, capinst;
    intern names, ids;
    size_t name_caps;
    int rc;
    char err[512];
} builder;

static const char *part_name(const builder *b)
{
    switch (b->part) {
    case P_STUDY: return b->fixture ? "study" : "/studies/{id}";
    case P_SERIES: return b->fixture ? "series" : "/studies/{id}/series";
    case P_INSTANCES: return b->fixture ? "instances" : "/studies/{id}/instances";
    default: return b->fixture ? b->fixture : "answer";
    }
}

static const char *type_name(int t)
{
    static const char *names[] = {"null", "boolean", "number", "string", "table", "table"};
    return names[t];
}

static int fail(builder *b, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(builder *b, int rc, const char *fmt, ...)
{
    va_list ap;
    if (b->rc)
        return b->rc == AR_ENOMEM ? 0 : 1;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof b->err, fmt, ap);
    va_end(ap);
    b->rc = rc;
    /* Out of memory stops at once.  A wrong shape lets the parse go on
     * (ignoring the rest): an answer cut short in the middle of a value
     * must read as garbled (retry), not as a broken study. */
    return rc == AR_ENOMEM ? 0 : 1;
}

static size_t held(const builder *b)
{
    return b->arena.bytes + b->captags * sizeof *b->tags + b->capseries * sizeof *b->series +
           b->capinst * sizeof *b->inst + intern_bytes(&b->names) + intern_bytes(&b->ids) +
           b->name_caps * 2 * sizeof(uint32_t) + b->parent_cap;
}

static int over_limit(builder *b)
{
    if (b->limit && held(b) > b->limit) {
        fail(b, AR_ENOMEM, "its snapshot needs more than the %zu KB left", b->limit / 1024);
        return 1;
    }
    return 0;
}

static int grow(builder *b, void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap + *cap / 2 : 16;
    void *nv = realloc(*v, nc * size);
    if (!nv)
        return fail(b, AR_ENOMEM, "out of memory"), -1;
    *v = nv;
    *cap = nc;
    return over_limit(b) ? -1 : 0;
}

static char *keep(builder *b, const char *s, size_t len)
{
    char *p = ar_arena_strndup(&b->arena, s, len);
    if (!p)
        fail(b, AR_ENOMEM, "out of memory");
    else if (over_limit(b))
        p = NULL;
    return p;
}

/* "series[3]" or "study", for messages */
static void what(const builder *b, char *out, size_t outlen)
{
    if (b->part == P_STUDY)
        snprintf(out, outlen, "study");
    else
        snprintf(out, outlen, "%s[%zu]", b->part == P_SERIES ? "series" : "instances", b->index);
}

static int add_tag(builder *b, const char *value, size_t len)
{
    long name;
    uint32_t slot;
    char *v;

    name = intern_get(&b->names, &b->arena, b->key, b->keylen, 1);
    if (name < 0)
        return fail(b, AR_ENOMEM, "out of memory"), -1;
    if ((size_t)name >= MAX_NAMES)
        return fail(b, AR_ERR, "%s: more than %u different tag names", part_name(b), MAX_NAMES), -1;
    if ((size_t)name >= b->name_caps) {
        size_t nc = b->name_caps ? b->name_caps * 2 : 64;
        uint32_t *g = realloc(b->name_gen, nc * sizeof *g), *s2;
        if (!g)
            return fail(b, AR_ENOMEM, "out of memory"), -1;
        b->name_gen = g;
        s2 = realloc(b->name_slot, nc * sizeof *s2);
        if (!s2)
            return fail(b, AR_ENOMEM, "out of memory"), -1;
        b->name_slot = s2;
        memset(b->name_gen + b->name_caps, 0, (nc - b->name_caps) * sizeof *g);
        b->name_caps = nc;
    }
    if (!(v = keep(b, value, len)))
        return -1;
    if (b->name_gen[name] == b->tag_gen) {
        slot = b->name_slot[name]; /* the same tag again: the last value wins */
    } else {
        if (grow(b, (void **)&b->tags, &b->captags, b->ntags, sizeof *b->tags))
            return -1;
        slot = (uint32_t)b->ntags++;
        b->e_tags->n++;
        b->name_gen[name] = b->tag_gen;
        b->name_slot[name] = slot;
    }
    b->tags[slot].value = v;
    b->tags[slot].len = (uint32_t)len;
    b->tags[slot].name = (uint16_t)name;
    return 0;
}

/* A number as Lua's tostring would show what lua-cjson decoded. */
static void number_text(const char *s, size_t len, char *out, size_t outlen)
{
    char tmp[64];
    double d;
    if (len >= sizeof tmp)
        len = sizeof tmp - 1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    d = strtod(tmp, NULL);
    if (d == floor(d) && d >= -9007199254740992.0 && d <= 9007199254740992.0)
        snprintf(out, outlen, "%lld", (long long)d);
    else
        snprintf(out, outlen, "%.14g", d);
}

static long long size_value(const char *s, size_t len)
{
    char tmp[64];
    double d;
    if (len >= sizeof tmp)
        return -1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    d = strtod(tmp, NULL);
    if (!(d >= 0) || d >= 4611686018427387904.0 || d != floor(d))
        return -1;
    return (long long)d;
}

static void begin_entity(builder *b)
{
    b->has_id = b->has_parent = 0;
    b->e_id = NULL;
    b->e_id_type = b->e_parent_type = "nil";
    b->parent_len = 0;
    b->e_size = -1;
    b->e_tagset.first = b->e_patient.first = (uint32_t)b->ntags;
    b->e_tagset.n = b->e_patient.n = 0;
    b->field = F_OTHER;
}

static int end_entity(builder *b)
{
    char w[64];
    what(b, w, sizeof w);
    if (!b->has_id)
        return fail(b, AR_ERR, "%s: ID must be a string, got %s", w, b->e_id_type), -1;
    if (b->part == P_STUDY) {
        ar_snapshot *s = b->snap;
        s->id = b->e_id;
        s->tags = b->e_tagset;
        s->patient = b->e_patient;
        return 0;
    }
    if (b->part == P_SERIES) {
        long idx = intern_get(&b->ids, &b->arena, b->e_id, strlen(b->e_id), 0);
        size_t k;
        if (idx >= 0)
            for (k = 0; k < b->nseries; k++)
                if (b->series[k].idx == (uint32_t)idx)
                    return fail(b, AR_ERR, "%s: series %s is listed twice", w, b->e_id), -1;
        idx = intern_get(&b->ids, &b->arena, b->e_id, strlen(b->e_id), 1);
        if (idx < 0)
            return fail(b, AR_ENOMEM, "out of memory"), -1;
        if (grow(b, (void **)&b->series, &b->capseries, b->nseries, sizeof *b->series))
            return -1;
        b->series[b->nseries].s.id = b->e_id;
        b->series[b->nseries].s.tags = b->e_tagset;
        b->series[b->nseries].s.first = b->series[b->nseries].s.n = 0;
        b->series[b->nseries].idx = (uint32_t)idx;
        b->nseries++;
        return 0;
    }
    if (!b->has_parent)
        return fail(b, AR_ERR, "%s: ParentSeries must be a string, got %s", w, b->e_parent_type), -1;
    long parent = intern_get(&b->ids, &b->arena, b->parent, b->parent_len, 1);
    if (parent < 0)
        return fail(b, AR_ENOMEM, "out of memory"), -1;
    if (grow(b, (void **)&b->inst, &b->capinst, b->ninst, sizeof *b->inst))
        return -1;
    b->inst[b->ninst].inst.id = b->e_id;
    b->inst[b->ninst].inst.file_size = b->e_size;
    b->inst[b->ninst].inst.tags = b->e_tagset;
    b->inst[b->ninst].parent = (uint32_t)parent;
    b->ninst++;
    return 0;
}

/* rel: the depth of the entity's fields relative to base */
static int entity_rel(const builder *b)
{
    return b->part == P_STUDY ? 1 : 2;
}

static int start_skip(builder *b, int type)
{
    if (type == T_MAP || type == T_LIST) {
        b->depth++;
        b->skip = b->depth;
    }
    return 1;
}

/* A value (a scalar, or the start of a container) where it appears. */
static int on_value(builder *b, int type, const char *s, size_t len, int truth)
{
    int rel, er;
    char w[64];

    if (b->skip) {
        if (type == T_MAP || type == T_LIST)
            b->depth++;
        return 1;
    }
    if (b->part == P_FIXTURE) {
        if (b->depth == 0) {
            if (type != T_MAP)
                return fail(b, AR_ERR, "%s: expected an object, got %s", b->fixture, type_name(type));
            b->depth++;
            return 1;
        }
        if (b->pending_part == P_NONE)
            return start_skip(b, type);
        b->part = b->pending_part;
        b->pending_part = P_NONE;
        b->base = b->depth;
        b->seen[b->part] = 1;
        b->index = 0;
    }
    rel = b->depth - b->base;
    er = entity_rel(b);
    if (rel == 0) {
        if (b->part == P_STUDY) {
            if (type == T_MAP) {
                begin_entity(b);
                b->depth++;
                return 1;
            }
            if (type == T_LIST) { /* {} and [] are one thing in Lua: an empty list is an empty object */
                begin_entity(b);
                b->list_as_map = 1;
                b->depth++;
                return 1;
            }
            return fail(b, AR_ERR, "study: expected an object");
        }
        if (type == T_LIST) {
            b->depth++;
            return 1;
        }
        if (type == T_MAP) {
            b->list_as_map = 1;
            b->depth++;
            return 1;
        }
        return fail(b, AR_ERR, "%s: expected a list", b->part == P_SERIES ? "series" : "instances");
    }
    if (b->list_as_map)
        return fail(b, AR_ERR, "%s: expected %s", b->part == P_STUDY ? "study" : b->part == P_SERIES ? "series" : "instances",
                    b->part == P_STUDY ? "an object" : "a list");
    if (rel == 1 && b->part != P_STUDY) {
        b->index++;
        if (type != T_MAP) {
            what(b, w, sizeof w);
            return fail(b, AR_ERR, "%s: expected an object", w);
        }
        begin_entity(b);
        b->depth++;
        return 1;
    }
    if (rel == er) {
        what(b, w, sizeof w);
        switch (b->field) {
        case F_ID:
            if (type == T_STR) {
                if (memchr(s, '\0', len))
                    return fail(b, AR_ERR, "%s: ID is not a valid id", w);
                if (!(b->e_id = keep(b, s, len)))
                    return 0;
                b->has_id = 1;
                return 1;
            }
            b->has_id = 0;
            b->e_id_type = type_name(type);
            return start_skip(b, type);
        case F_PARENT:
            if (type == T_STR) {
                if (len + 1 > b->parent_cap) {
                    char *np = realloc(b->parent, len + 1);
                    if (!np)
                        return fail(b, AR_ENOMEM, "out of memory");
                    b->parent = np;
                    b->parent_cap = len + 1;
                }
                memcpy(b->parent, s, len);
                b->parent_len = len;
                b->has_parent = 1;
                return 1;
            }
            b->has_parent = 0;
            b->e_parent_type = type_name(type);
            return start_skip(b, type);
        case F_LAST_UPDATE:
            if (type == T_STR) {
                if (!(b->snap->last_update = keep(b, s, len)))
                    return 0;
                return 1;
            }
            if (type == T_NULL) {
                b->snap->last_update = NULL;
                return 1;
            }
            return fail(b, AR_ERR, "study: LastUpdate must be a string, got %s", type_name(type));
        case F_IS_STABLE:
            b->snap->is_stable = type == T_BOOL && truth;
            return start_skip(b, type);
        case F_SIZE:
            b->e_size = type == T_NUM ? size_value(s, len) : -1;
            return start_skip(b, type);
        case F_TAGS:
        case F_PATIENT:
            b->e_tags = b->field == F_TAGS ? &b->e_tagset : &b->e_patient;
            b->e_tags->first = (uint32_t)b->ntags;
            b->e_tags->n = 0;
            b->tag_gen++;
            if (type == T_NULL)
                return 1;
            if (type == T_MAP || type == T_LIST) {
                b->tags_as_list = type == T_LIST;
                b->depth++;
                return 1;
            }
            return fail(b, AR_ERR, "%s %s: expected an object of tags, got %s", w,
                        b->field == F_TAGS ? "MainDicomTags" : "PatientMainDicomTags",
                        type_name(type));
        default:
            return start_skip(b, type);
        }
    }
    /* rel == er + 1: a tag value */
    if (b->tags_as_list) {
        what(b, w, sizeof w);
        return fail(b, AR_ERR, "%s %s: expected an object of tags, got a list", w,
                    b->e_tags == &b->e_tagset ? "MainDicomTags" : "PatientMainDicomTags");
    }
    if (type == T_STR)
        return add_tag(b, s, len) == 0 || b->rc != AR_ENOMEM;
    if (type == T_NUM) {
        char num[64];
        number_text(s, len, num, sizeof num);
        return add_tag(b, num, strlen(num)) == 0 || b->rc != AR_ENOMEM;
    }
    return start_skip(b, type);
}

static int on_end(builder *b)
{
    int rel, er;
    if (b->skip) {
        if (b->depth == b->skip)
            b->skip = 0;
        b->depth--;
        return 1;
    }
    rel = b->depth - b->base; /* the depth inside the closing container */
    b->depth--;
    if (b->part == P_FIXTURE)
        return 1; /* the fixture's own object */
    er = entity_rel(b);
    if (rel == er + 1) {      /* a tags object */
        b->tags_as_list = 0;
        return 1;
    }
    if (rel == er) {          /* an entity */
        b->list_as_map = 0;
        if (end_entity(b))
            return b->rc == AR_ENOMEM ? 0 : 1; /* a wrong shape: read on (see fail) */
    } else {                  /* the part's list */
        b->list_as_map = 0;
    }
    if (b->depth == b->base && b->fixture)
        b->part = P_FIXTURE;
    return 1;
}

static int cb_null(void *ctx)
{
    if (((builder *)ctx)->rc)
        return 1;
    return on_value(ctx, T_NULL, NULL, 0, 0);
}

static int cb_bool(void *ctx, int v)
{
    if (((builder *)ctx)->rc)
        return 1;
    return on_value(ctx, T_BOOL, NULL, 0, v);
}

static int cb_number(void *ctx, const char *s, size_t len)
{
    if (((builder *)ctx)->rc)
        return 1;
    return on_value(ctx, T_NUM, s, len, 0);
}

static int cb_string(void *ctx, const unsigned char *s, size_t len)
{
    if (((builder *)ctx)->rc)
        return 1;
    return on_value(ctx, T_STR, (const char *)s, len, 0);
}

static int cb_start_map(void *ctx)
{
    if (((builder *)ctx)->rc)
        return 1;
    return on_value(ctx, T_MAP, NULL, 0, 0);
}

static int cb_start_list(void *ctx)
{
    if (((builder *)ctx)->rc)
        return 1;
    return on_value(ctx, T_LIST, NULL, 0, 0);
}

static int cb_end(void *ctx)
{
    if (((builder *)ctx)->rc)
        return 1;
    return on_end(ctx);
}

static int cb_key(void *ctx, const unsigned char *k, size_t len)
{
    builder *b = ctx;
    int rel;
    if (b->rc || b->skip)
        return 1;
    if (b->part == P_FIXTURE) {
        b->pending_part = P_NONE;
        if (len == 5 && memcmp(k, "study", 5) == 0)
            b->pending_part = P_STUDY;
        else if (len == 6 && memcmp(k, "series", 6) == 0)
            b->pending_part = P_SERIES;
        else if (len == 9 && memcmp(k, "instances", 9) == 0)
            b->pending_part = P_INSTANCES;
        return 1;
    }
    if (b->list_as_map) {
        char w[16];
        snprintf(w, sizeof w, "%s", b->part == P_STUDY ? "study" : b->part == P_SERIES ? "series" : "instances");
        return fail(b, AR_ERR, "%s: expected %s", w, b->part == P_STUDY ? "an object" : "a list");
    }
    rel = b->depth - b->base;
    if (rel == entity_rel(b)) {
#define IS(s) (len == sizeof s - 1 && memcmp(k, s, len) == 0)
        b->field = IS("ID") ? F_ID
                 : IS("MainDicomTags") ? F_TAGS
                 : b->part == P_STUDY && IS("PatientMainDicomTags") ? F_PATIENT
                 : b->part == P_STUDY && IS("LastUpdate") ? F_LAST_UPDATE
                 : b->part == P_STUDY && IS("IsStable") ? F_IS_STABLE
                 : b->part == P_INSTANCES && IS("ParentSeries") ? F_PARENT
                 : b->part == P_INSTANCES && IS("FileSize") ? F_SIZE
                 : F_OTHER;
#undef IS
        return 1;
    }
    b->keylen = len < sizeof b->key ? len : sizeof b->key - 1;
    memcpy(b->key, k, b->keylen);
    return 1;
}

static const yajl_callbacks callbacks = {
    cb_null, cb_bool, NULL, NULL, cb_number, cb_string,
    cb_start_map, cb_key, cb_end, cb_start_list, cb_end,
};

/* ---- parsing one part ------------------------------------------------------- */

typedef struct part_parse {
    yajl_handle h;
} part_parse;

static int part_begin(builder *b, part_parse *pp, int part, char *err, size_t errlen)
{
    pp->h = yajl_alloc(&callbacks, NULL, b);
    if (!pp->h)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    yajl_config(pp->h, yajl_dont_validate_strings, 1); /* like lua-cjson: bytes as they are */
    b->part = part;
    b->base = 0;
    b->depth = 0;
    b->skip = 0;
    b->pending_part = P_NONE;
    b->list_as_map = b->tags_as_list = 0;
    b->index = 0;
    if (part != P_FIXTURE)
        b->seen[part] = 1;
    return AR_OK;
}

static int parse_error(builder *b, part_parse *pp, yajl_status st, const unsigned char *text,
                       size_t len, char *err, size_t errlen)
{
    unsigned char *msg;
    char one[256];
    size_t n;
    if (st == yajl_status_client_canceled)
        return ar_seterr(err, errlen, b->rc ? b->rc : AR_ERR, "%s", b->err);
    msg = yajl_get_error(pp->h, 0, text, len);
    snprintf(one, sizeof one, "%s", msg ? (const char *)msg : "parse error");
    if (msg)
        yajl_free_error(pp->h, msg);
    n = strlen(one);
    while (n && (one[n - 1] == '\n' || one[n - 1] == ' '))
        one[--n] = '\0';
    return ar_seterr(err, errlen, b->fixture ? AR_ERR : AR_ENET, "%s: invalid JSON: %s",
                     b->fixture ? b->fixture : part_name(b), one);
}

static int part_feed(builder *b, part_parse *pp, const char *buf, size_t len, char *err,
                     size_t errlen)
{
    yajl_status st = yajl_parse(pp->h, (const unsigned char *)buf, len);
    if (st != yajl_status_ok)
        return parse_error(b, pp, st, (const unsigned char *)buf, len, err, errlen);
    return AR_OK;
}

static int part_end(builder *b, part_parse *pp, char *err, size_t errlen)
{
    int part = b->fixture ? P_FIXTURE : b->part;
    int rc = AR_OK;
    yajl_status st = yajl_complete_parse(pp->h);
    if (st != yajl_status_ok)
        rc = parse_error(b, pp, st, NULL, 0, err, errlen);
    else if (b->rc)
        rc = ar_seterr(err, errlen, b->rc, "%s", b->err); /* valid JSON, wrong shape */
    else if (b->depth != 0)
        rc = ar_seterr(err, errlen, b->fixture ? AR_ERR : AR_ENET, "%s: invalid JSON: cut short",
                       b->fixture ? b->fixture : part_name(b));
    yajl_free(pp->h);
    pp->h = NULL;
    b->part = part;
    return rc;
}

/* ---- finishing: order and lay out -------------------------------------------- */

typedef struct sort_key {
    double num;
    int has;
    uint32_t group;          /* series position (instances) */
    uint32_t orig;
    const char *id;
} sort_key;

static int cmp_key(const void *pa, const void *pb)
{
    const sort_key *a = pa, *b = pb;
    int c;
    if (a->group != b->group)
        return a->group < b->group ? -1 : 1;
    if (a->has != b->has)
        return a->has ? -1 : 1;
    if (a->has && a->num != b->num)
        return a->num < b->num ? -1 : 1;
    c = strcmp(a->id, b->id);
    if (c)
        return c;
    return a->orig < b->orig ? -1 : a->orig > b->orig;
}

/* Lua's tonumber on a tag value: decimal or hex, surrounding spaces. */
static int lua_number(const char *s, size_t len, double *out)
{
    char tmp[128], *end;
    const char *p;
    if (!s || len >= sizeof tmp || strlen(s) != len)
        return 0;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    p = tmp;
    while (*p == ' ' || (*p >= '\t' && *p <= '\r'))
        p++;
    if (*p == '+' || *p == '-')
        p++;
    if (!(*p >= '0' && *p <= '9') && *p != '.')
        return 0; /* no inf, nan */
    errno = 0;
    *out = strtod(tmp, &end);
    if (end == tmp)
        return 0;
    while (*end == ' ' || (*end >= '\t' && *end <= '\r'))
        end++;
    return *end == '\0' && *out == *out;
}

static void number_key(const builder *b, ar_snap_tags tags, long name, sort_key *k)
{
    k->has = 0;
    if (name < 0)
        return;
    for (uint32_t i = 0; i < tags.n; i++) {
        const ar_snap_tag *t = &b->tags[tags.first + i];
        if (t->name == (uint16_t)name) {
            k->has = lua_number(t->value, t->len, &k->num);
            return;
        }
    }
}

static int valid_id(const char *id, int empty_ok)
{
    size_t n = strlen(id);
    return n <= 127 && (n > 0 || empty_ok);
}

static int finish(builder *b, ar_snapshot **out, char *err, size_t errlen)
{
    ar_snapshot *s = b->snap;
    sort_key *keys = NULL;
    long *pos_of_id = NULL;
    ar_snap_series *series = NULL;
    ar_snap_instance *inst = NULL;
    size_t i, n = 0;
    long sn, in;
    int rc = AR_OK;

    if (!s->id) {
        rc = ar_seterr(err, errlen, AR_ERR, "study: %s",
                       b->seen[P_STUDY] ? "ID must be a string, got nil" : "expected an object, got nil");
        goto out;
    }
    if (!valid_id(s->id, 0)) {
        rc = ar_seterr(err, errlen, AR_ERR, "study: ID is not a valid id");
        goto out;
    }
    sn = intern_get(&b->names, &b->arena, "SeriesNumber", 12, 0);
    in = intern_get(&b->names, &b->arena, "InstanceNumber", 14, 0);

    /* series */
    keys = calloc(b->nseries > b->ninst ? b->nseries + 1 : b->ninst + 1, sizeof *keys);
    pos_of_id = malloc((b->ids.n + 1) * sizeof *pos_of_id);
    series = calloc(b->nseries + 1, sizeof *series);
    if (!keys || !pos_of_id || !series) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory ordering the study");
        goto out;
    }
    for (i = 0; i < b->nseries; i++) {
        if (!valid_id(b->series[i].s.id, 1)) {
            rc = ar_seterr(err, errlen, AR_ERR, "series: ID is not a valid id");
            goto out;
        }
        keys[i].orig = (uint32_t)i;
        keys[i].id = b->series[i].s.id;
        number_key(b, b->series[i].s.tags, sn, &keys[i]);
    }
    qsort(keys, b->nseries, sizeof *keys, cmp_key);
    for (i = 0; i < b->ids.n; i++)
        pos_of_id[i] = -1;
    for (i = 0; i < b->nseries; i++) {
        series[i] = b->series[keys[i].orig].s;
        pos_of_id[b->series[keys[i].orig].idx] = (long)i;
    }

    /* instances: grouped by series position, then by InstanceNumber, id */
    for (i = 0; i < b->ninst; i++) {
        long pos = pos_of_id[b->inst[i].parent];
        if (pos < 0)
            continue;
        keys[n].group = (uint32_t)pos;
        keys[n].orig = (uint32_t)i;
        keys[n].id = b->inst[i].inst.id;
        number_key(b, b->inst[i].inst.tags, in, &keys[n]);
        n++;
    }
    qsort(keys, n, sizeof *keys, cmp_key);
    inst = malloc((n + 1) * sizeof *inst);
    if (!inst) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory ordering the study");
        goto out;
    }
    for (i = 0; i < n; i++) {
        inst[i] = b->inst[keys[i].orig].inst;
        if (series[keys[i].group].n++ == 0)
            series[keys[i].group].first = i;
    }
    for (i = 0; i < b->nseries; i++)
        if (series[i].n == 0)
            series[i].first = n;

    s->series = series;
    s->nseries = b->nseries;
    s->instances = inst;
    s->ninstances = n;
    s->instances_listed = b->ninst;
    s->tag = b->tags;
    s->names = b->names.str;
    s->nnames = b->names.n;
    series = NULL;
    inst = NULL;
    free(b->series);
    b->series = NULL;
    free(b->inst);
    b->inst = NULL;
    b->capseries = b->capinst = 0;
    s->bytes = held(b) + s->nseries * sizeof *s->series + s->ninstances * sizeof *s->instances;
    *out = s;
out:
    free(keys);
    free(pos_of_id);
    free(series);
    free(inst);
    return rc;
}

/* What a finished snapshot keeps of its builder. */
typedef struct snap_mem {
    ar_arena arena;
    intern names;
} snap_mem;

static void builder_free(builder *b, int keep_snapshot)
{
    free(b->parent);
    free(b->name_gen);
    free(b->name_slot);
    free(b->series);
    free(b->inst);
    intern_free(&b->ids);
    if (!keep_snapshot) {
        free(b->tags);
        intern_free(&b->names);
        ar_arena_free(&b->arena);
        free(b->snap);
    }
}

static int builder_new(builder *b, const char *fixture, size_t limit, char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    b->snap = calloc(1, sizeof *b->snap);
    if (!b->snap)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    b->limit = limit;
    b->fixture = fixture;
    return AR_OK;
}

static int builder_done(builder *b, ar_snapshot **out, char *err, size_t errlen)
{
    ar_snapshot *s = NULL;
    snap_mem *m;
    int rc = finish(b, &s, err, errlen);
    if (rc == AR_OK && !(m = malloc(sizeof *m)))
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    if (rc) {
        free((void *)b->snap->series);
        free((void *)b->snap->instances);
        builder_free(b, 0);
        return rc;
    }
    m->arena = b->arena;
    m->names = b->names;
    s->mem_ = m;
    s->refs_ = 1;
    builder_free(b, 1);
    *out = s;
    return AR_OK;
}

/* ---- public ------------------------------------------------------------------ */

typedef int (*chunk_fn)(void *ud, const char **buf, size_t *len, char *err, size_t errlen);

/* One part, read through next() until it gives an empty piece. */
static int parse_part(builder *b, int part, chunk_fn next, void *ud, char *err, size_t errlen)
{
    part_parse pp = {NULL};
    const char *buf;
    size_t len;
    int rc;

    if ((rc = part_begin(b, &pp, part, err, errlen)))
        return rc;
    for (;;) {
        if ((rc = next(ud, &buf, &len, err, errlen)) ||
            (len && (rc = part_feed(b, &pp, buf, len, err, errlen)))) {
            yajl_free(pp.h);
            return rc;
        }
        if (len == 0)
            break;
    }
    return part_end(b, &pp, err, errlen);
}

typedef struct mem_src {
    const char *p;
    size_t len;
} mem_src;

static int mem_next(void *ud, const char **buf, size_t *len, char *err, size_t errlen)
{
    mem_src *m = ud;
    (void)err;
    (void)errlen;
    *buf = m->p;
    *len = m->len;
    m->len = 0;
    return AR_OK;
}

int ar_snapshot_from_answers(const char *study, size_t study_len, const char *series,
                             size_t series_len, const char *instances, size_t instances_len,
                             size_t limit, ar_snapshot **out, char *err, size_t errlen)
{
    mem_src src[3] = {{study ? study : "", study ? study_len : 0},
                      {series ? series : "", series ? series_len : 0},
                      {instances ? instances : "", instances ? instances_len : 0}};
    const int parts[3] = {P_STUDY, P_SERIES, P_INSTANCES};
    builder b;
    int rc, k;

    *out = NULL;
    if ((rc = builder_new(&b, NULL, limit, err, errlen)))
        return rc;
    for (k = 0; k < 3; k++)
        if ((rc = parse_part(&b, parts[k], mem_next, &src[k], err, errlen))) {
            builder_free(&b, 0);
            return rc;
        }
    return builder_done(&b, out, err, errlen);
}

static int from_fixture(const char *name, size_t limit, chunk_fn next, void *ud,
                        ar_snapshot **out, char *err, size_t errlen)
{
    builder b;
    int rc;

    *out = NULL;
    if ((rc = builder_new(&b, name, limit, err, errlen)))
        return rc;
    if ((rc = parse_part(&b, P_FIXTURE, next, ud, err, errlen))) {
        builder_free(&b, 0);
        return rc;
    }
    return builder_done(&b, out, err, errlen);
}

int ar_snapshot_from_fixture(const char *json, size_t len, const char *name, size_t limit,
                             ar_snapshot **out, char *err, size_t errlen)
{
    mem_src m = {json ? json : "", json ? len : 0};
    if (m.len == 0) {
        *out = NULL;
        return ar_seterr(err, errlen, AR_ERR, "%s: invalid JSON: empty", name ? name : "fixture");
    }
    return from_fixture(name ? name : "fixture", limit, mem_next, &m, out, err, errlen);
}

typedef struct file_src {
    FILE *f;
    const char *path;
    char buf[64 * 1024];
} file_src;

static int file_next(void *ud, const char **buf, size_t *len, char *err, size_t errlen)
{
    file_src *fs = ud;
    size_t n = fread(fs->buf, 1, sizeof fs->buf, fs->f);
    if (n == 0 && ferror(fs->f))
        return ar_seterr(err, errlen, AR_EIO, "%s: %s", fs->path, strerror(errno));
    *buf = fs->buf;
    *len = n;
    return AR_OK;
}

int ar_snapshot_from_fixture_file(const char *path, size_t limit, ar_snapshot **out, char *err,
                                  size_t errlen)
{
    file_src *fs = malloc(sizeof *fs);
    int rc;
    *out = NULL;
    if (!fs)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    fs->path = path;
    fs->f = fopen(path, "rb");
    if (!fs->f) {
        rc = ar_seterr(err, errlen, AR_EIO, "%s: %s", path, strerror(errno));
        free(fs);
        return rc;
    }
    rc = from_fixture(path, limit, file_next, fs, out, err, errlen);
    fclose(fs->f);
    free(fs);
    return rc;
}

ar_snapshot *ar_snapshot_ref(ar_snapshot *s)
{
    if (s)
        s->refs_++;
    return s;
}

void ar_snapshot_free(ar_snapshot *s)
{
    snap_mem *m;
    if (!s || --s->refs_ > 0)
        return;
    m = s->mem_;
    free((void *)s->series);
    free((void *)s->instances);
    free((void *)s->tag);
    intern_free(&m->names);
    ar_arena_free(&m->arena);
    free(m);
    free(s);
}

const char *ar_snapshot_tag(const ar_snapshot *s, ar_snap_tags tags, const char *name,
                            size_t *len)
{
    for (uint32_t i = 0; i < tags.n; i++) {
        const ar_snap_tag *t = &s->tag[tags.first + i];
        if (strcmp(s->names[t->name], name) == 0) {
            if (len)
                *len = t->len;
            return t->value;
        }
    }
    return NULL;
}
