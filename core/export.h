/* export.h - write one study/series export into its final folder, atomically.
 *
 * Promises:
 *  - files are streamed into `<storage>/<final_rel>.WORKING/`, then the folder
 *    is renamed to `<storage>/<final_rel>`; if the final folder exists it is
 *    swapped in one step (renameat2 RENAME_EXCHANGE) and the old tree removed,
 *    so the final name never holds a partial tree;
 *  - on any failure the .WORKING folder is removed and the final folder (old
 *    export, if any) is untouched;
 *  - nothing is written outside the storage root: final_rel and every file
 *    path are '/'-joined components that must already be sanitised; a "", "."
 *    or ".." component, or a symlink met on the way, is refused (AR_EIO);
 *  - optional chown of the whole new tree (uid/gid >= 0).
 */
#ifndef AR_EXPORT_H
#define AR_EXPORT_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include "http.h"

typedef struct ar_export_file {
    const char *instance_id;  /* Orthanc instance id: fetched from /instances/<id>/file */
    const char *rel_path;     /* path inside the export folder, e.g. "SE1-X-1.2/1.2.3.dcm" */
    long long size;           /* expected size, -1 = unknown */
} ar_export_file;

typedef struct ar_export_opts {
    int max_connections;
    int fsync;
    long uid, gid;            /* -1 = leave */
    int verify_md5;           /* compare each file with Orthanc's MD5 before renaming */
    volatile sig_atomic_t *stop;
    void (*progress)(void *ud, size_t files_done, size_t files_total, long long bytes_done);
    void *progress_ud;
} ar_export_opts;

typedef struct ar_export_result {
    size_t files;
    long long bytes;
    long requests;
    int replaced;             /* 1 if an older export was swapped out */
} ar_export_result;

int ar_export_download(ar_http *h, const char *storage_root, const char *final_rel,
                       const ar_export_file *files, size_t n, const ar_export_opts *o,
                       ar_export_result *res, char *err, size_t errlen);

/* Remove every `*.WORKING` folder under storage_root (left by a crash).
 * *removed = how many.  Errors name the path. */
int ar_export_clean_working(const char *storage_root, int *removed, char *err, size_t errlen);

/* mkdir -p of a '/'-joined relative path under root, refusing symlinks and
 * dot components.  Returns an fd of the last folder in *fd_out (or -1 if NULL). */
int ar_mkdirs_at(const char *root, const char *rel, int *fd_out, char *err, size_t errlen);

/* Recursively remove root/rel (no-op if absent). */
int ar_remove_tree(const char *root, const char *rel, char *err, size_t errlen);

#endif
