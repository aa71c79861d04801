/* jsonq.c - see jsonq.h */
#include "jsonq.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"

/* Runs in protected mode.  stack in: body, path.  out: value as string or nil */
static const char jsonq_chunk[] =
    "local cjson, body, path = ...\n"
    "local ok, v = pcall(cjson.decode, body)\n"
    "if not ok then error('malformed JSON: ' .. tostring(v), 0) end\n"
    "for key in string.gmatch(path, '[^.]+') do\n"
    "  if type(v) ~= 'table' then return nil end\n"
    "  local k = math.tointeger(tonumber(key))\n"
    "  if k and v[k] ~= nil then v = v[k] else v = v[key] end\n"
    "end\n"
    "if v == nil or v == cjson.null then return nil end\n"
    "if type(v) == 'number' and math.type(v) == 'float' and v == math.floor(v) and v > -2^53 and v < 2^53 then\n"
    "  return string.format('%d', math.tointeger(v))\n"
    "end\n"
    "if type(v) == 'table' then return cjson.encode(v) end\n"
    "return tostring(v)\n";

/* Returns the strings of the list at path joined by "\n" (ids never hold one). */
static const char list_chunk[] =
    "local cjson, body, path = ...\n"
    "local ok, v = pcall(cjson.decode, body)\n"
    "if not ok then error('malformed JSON: ' .. tostring(v), 0) end\n"
    "for key in string.gmatch(path, '[^.]+') do\n"
    "  if type(v) ~= 'table' then return nil end\n"
    "  v = v[key]\n"
    "end\n"
    "if type(v) ~= 'table' then return nil end\n"
    "local out = {}\n"
    "for i, s in ipairs(v) do\n"
    "  if type(s) == 'table' then s = s.ID end\n"
    "  if type(s) ~= 'string' or s:find('[\\n%z]') then error('list item ' .. i .. ' is not an id', 0) end\n"
    "  out[#out + 1] = s\n"
    "end\n"
    "return table.concat(out, '\\n')\n";

static const char quote_chunk[] =
    "local cjson, s = ...\n"
    "return cjson.encode(s)\n";

static int run_chunk(const char *chunk, const char *a, size_t alen, const char *b,
                     char *out, size_t outlen, char **dup, char *err, size_t errlen)
{
    int rc = AR_ERR;
    lua_State *L = luaL_newstate();
    if (!L)
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory creating a JSON decoder");
    luaL_requiref(L, "_G", luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    lua_settop(L, 0);
    if (luaL_loadbufferx(L, chunk, strlen(chunk), "=jsonq", "t") != LUA_OK) {
        rc = ar_seterr(err, errlen, AR_ERR, "internal: %s", lua_tostring(L, -1));
        goto out;
    }
    luaopen_cjson(L);               /* stack: chunk, cjson */
    lua_pushlstring(L, a, alen);    /* stack: chunk, cjson, a */
    int nargs = 2;
    if (b) {
        lua_pushstring(L, b);
        nargs = 3;
    }
    if (lua_pcall(L, nargs, 1, 0) != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        rc = ar_seterr(err, errlen, AR_ERR, "%s", m ? m : "JSON error");
        goto out;
    }
    if (lua_isnil(L, -1)) {
        rc = ar_seterr(err, errlen, AR_ENOTFOUND, "JSON answer has no '%s'", b ? b : "value");
        goto out;
    }
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (dup) {
        *dup = malloc(n + 1);
        if (!*dup) {
            rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(*dup, s, n + 1);
    } else {
        if (n >= outlen) {
            rc = ar_seterr(err, errlen, AR_ERR, "JSON value of '%s' is too long (%zu bytes)",
                           b ? b : "value", n);
            goto out;
        }
        memcpy(out, s, n + 1);
    }
    rc = AR_OK;
out:
    lua_close(L);
    return rc;
}

int ar_jsonq_get(const char *body, size_t len, const char *path, char *out, size_t outlen,
                 char *err, size_t errlen)
{
    return run_chunk(jsonq_chunk, body ? body : "", body ? len : 0, path, out, outlen, NULL,
                     err, errlen);
}

int ar_jsonq_list(const char *body, size_t len, const char *path, char ***items, size_t *n,
                  char *err, size_t errlen)
{
    char *joined = NULL;
    int rc;
    *items = NULL;
    *n = 0;
    rc = run_chunk(list_chunk, body ? body : "", body ? len : 0, path ? path : "", NULL, 0,
                   &joined, err, errlen);
    if (rc)
        return rc;
    size_t count = joined[0] ? 1 : 0;
    for (char *p = joined; *p; p++)
        count += *p == '\n';
    /* one block: the pointer array followed by the text */
    size_t tlen = strlen(joined) + 1;
    char **v = malloc((count + 1) * sizeof *v + tlen);
    if (!v) {
        free(joined);
        return ar_seterr(err, errlen, AR_ENOMEM, "out of memory");
    }
    char *text = (char *)(v + count + 1);
    memcpy(text, joined, tlen);
    free(joined);
    size_t i = 0;
    for (char *p = text; count && i < count;) {
        v[i++] = p;
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        p = nl + 1;
    }
    v[count] = NULL;
    *items = v;
    *n = count;
    return AR_OK;
}

int ar_jsonq_quote(const char *s, char **out, char *err, size_t errlen)
{
    *out = NULL;
    return run_chunk(quote_chunk, s, strlen(s), NULL, NULL, 0, out, err, errlen);
}
