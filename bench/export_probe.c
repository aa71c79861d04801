/* export_probe.c - time core/export alone, without the daemon around it.
 *
 * A diagnostic for bench/run.sh: it reads "<instance id> <rel path> <size>"
 * lines on stdin and calls ar_export_download() once, so the benchmark can
 * tell the cost of the transfer core (libcurl multi + files + rename) from
 * the cost of the daemon (change polling, study fetch, rules, plan, ledger).
 *
 *   export_probe URL STORAGE FINAL_REL CONNECTIONS FSYNC(0|1) < files.txt
 *
 * Prints one line: "files=N bytes=N requests=N seconds=S" (seconds from just
 * before ar_export_download to just after it).  Exit 0 on success, 1 on an
 * export error, 2 on bad usage.  Built by bench/run.sh against build-bench's
 * libarcore.a; it is not part of the project's build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "export.h"
#include "http.h"

typedef struct file_list {
    ar_export_file *v;
    char **strings;  /* every strdup'ed id and path, freed at the end */
    size_t n, cap, nstr;
} file_list;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int list_add(file_list *l, const char *id, const char *rel, long long size)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        ar_export_file *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return AR_ENOMEM;
        l->v = v;
        char **s = realloc(l->strings, 2 * cap * sizeof(*s));
        if (!s)
            return AR_ENOMEM;
        l->strings = s;
        l->cap = cap;
    }
    char *a = strdup(id), *b = strdup(rel);
    if (!a || !b) {
        free(a);
        free(b);
        return AR_ENOMEM;
    }
    l->strings[l->nstr++] = a;
    l->strings[l->nstr++] = b;
    l->v[l->n].instance_id = a;
    l->v[l->n].rel_path = b;
    l->v[l->n].size = size;
    l->n++;
    return AR_OK;
}

static int read_list(FILE *in, file_list *l)
{
    char line[8192];
    while (fgets(line, sizeof(line), in)) {
        char id[256], rel[4096];
        long long size;
        if (line[0] == '\n')
            continue;
        if (sscanf(line, "%255s %4095s %lld", id, rel, &size) != 3)
            return AR_ERR;
        if (list_add(l, id, rel, size))
            return AR_ENOMEM;
    }
    return AR_OK;
}

int main(int argc, char **argv)
{
    char err[2048] = "";
    file_list l = {0};
    ar_http *h = NULL;
    int code = 1;

    if (argc != 6) {
        fprintf(stderr, "usage: export_probe URL STORAGE FINAL_REL CONNECTIONS FSYNC < files\n");
        return 2;
    }
    if (read_list(stdin, &l)) {
        fprintf(stderr, "export_probe: bad input line (want: id rel_path size)\n");
        code = 2;
        goto out;
    }
    ar_http_opts ho = {.base_url = argv[1], .timeout_s = 60, .connect_timeout_s = 10};
    if (ar_http_new(&ho, &h, err, sizeof(err))) {
        fprintf(stderr, "export_probe: %s\n", err);
        goto out;
    }
    ar_export_opts eo = {
        .max_connections = atoi(argv[4]),
        .fsync = atoi(argv[5]),
        .uid = -1,
        .gid = -1,
    };
    ar_export_result res;
    double t0 = mono();
    int rc = ar_export_download(h, argv[2], argv[3], l.v, l.n, &eo, &res, err, sizeof(err));
    double t1 = mono();
    if (rc) {
        fprintf(stderr, "export_probe: %s\n", err);
        goto out;
    }
    printf("files=%zu bytes=%lld requests=%ld seconds=%.6f\n", res.files, res.bytes,
           res.requests, t1 - t0);
    code = 0;
out:
    ar_http_free(h);
    for (size_t i = 0; i < l.nstr; i++)
        free(l.strings[i]);
    free(l.strings);
    free(l.v);
    return code;
}
