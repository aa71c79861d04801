/* export.c - atomic study/series exports and the folder helpers.  See export.h.
 *
 * Every path below the storage root is walked one component at a time with
 * *at() calls on directory descriptors opened O_NOFOLLOW, so a symlink planted
 * anywhere under the root is refused (while creating) or removed as a link
 * (while deleting), never followed.  Only the storage root itself is opened
 * by name and may be a symlink: the administrator chose it.
 *
 * An export is built in `<final>.WORKING` next to the final folder, then moved
 * into place with one rename (or one RENAME_EXCHANGE when an older export
 * holds the name), so readers see either the old tree or the new one.
 */
#include "export.h"
#include "md5check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "err.h"
#include "transfer.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define WORKING_SUFFIX ".WORKING"
/* Deepest folder nesting walked under the storage root. */
#define MAX_DEPTH 64

/* renameat2 through the system call: older glibc lacks the wrapper. */
static int rename2(int olddir, const char *oldname, int newdir, const char *newname,
                   unsigned flags)
{
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, olddir, oldname, newdir, newname, flags);
#else
    (void)olddir; (void)oldname; (void)newdir; (void)newname; (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

/* malloc'ed "a/b" (or a copy of b when a is empty); NULL when out of memory. */
static char *path_join(const char *a, const char *b, size_t blen)
{
    size_t alen = strlen(a);
    char *p = malloc(alen + blen + 2);
    if (!p)
        return NULL;
    if (alen) {
        memcpy(p, a, alen);
        p[alen++] = '/';
    }
    memcpy(p + alen, b, blen);
    p[alen + blen] = '\0';
    return p;
}

static int is_dot_or_empty(const char *c, size_t len)
{
    return len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.');
}

/* 1 when every '/'-separated component of rel[0..len) is a plain name. */
static int rel_ok(const char *rel, size_t len)
{
    size_t i = 0;
    if (len == 0)
        return 0;
    for (;;) {
        size_t start = i;
        while (i < len && rel[i] != '/')
            i++;
        if (is_dot_or_empty(rel + start, i - start))
            return 0;
        if (i == len)
            return 1;
        i++;  /* skip '/'; a trailing '/' makes an empty component next */
    }
}

static int refuse_rel(const char *base_path, const char *rel, char *err, size_t errlen)
{
    return ar_seterr(err, errlen, AR_EIO,
                     "refusing path '%s' under %s: empty, '.' or '..' component", rel,
                     base_path);
}

/* Walk rel[0..len) below base_fd one component at a time, creating missing
 * folders when create is set.  Symlinks and non-folders are refused.  On
 * success *fd_out is the last folder (O_DIRECTORY).  Without create, a
 * missing component gives AR_ENOTFOUND and no message. */
static int walk_dirs(int base_fd, const char *base_path, const char *rel, size_t len,
                     int create, int *fd_out, char *err, size_t errlen)
{
    int rc = AR_ERR;
    int fd = -1;
    size_t i = 0;

    *fd_out = -1;
    if (!rel_ok(rel, len))
        return refuse_rel(base_path, rel, err, errlen);
    fd = dup(base_fd);
    if (fd < 0) {
        rc = ar_seterr(err, errlen, AR_EIO, "dup %s: %s", base_path, strerror(errno));
        goto out;
    }
    while (i < len) {
        size_t start = i;
        char name[NAME_MAX + 1];
        while (i < len && rel[i] != '/')
            i++;
        size_t clen = i - start;
        if (clen > NAME_MAX) {
            char shown[PATH_MAX];
            snprintf(shown, sizeof(shown), "%s/%.*s", base_path, (int)i, rel);
            rc = ar_seterr(err, errlen, AR_EIO, "mkdir %s: %s", shown, strerror(ENAMETOOLONG));
            goto out;
        }
        memcpy(name, rel + start, clen);
        name[clen] = '\0';
        if (i < len)
            i++;

        if (create && mkdirat(fd, name, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            char shown[PATH_MAX];
            snprintf(shown, sizeof(shown), "%s/%.*s", base_path, (int)(start + clen), rel);
            rc = ar_seterr(err, errlen, AR_EIO, "mkdir %s: %s", shown, strerror(e));
            goto out;
        }
        int next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            int e = errno;
            char shown[PATH_MAX];
            snprintf(shown, sizeof(shown), "%s/%.*s", base_path, (int)(start + clen), rel);
            struct stat st;
            if (!create && e == ENOENT) {
                rc = AR_ENOTFOUND;
            } else if ((e == ELOOP || e == ENOTDIR) &&
                       fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
                /* O_DIRECTORY|O_NOFOLLOW on a link gives ENOTDIR or ELOOP */
                e = ELOOP;
                rc = ar_seterr(err, errlen, AR_EIO, "refusing symlink %s: %s", shown,
                               strerror(e));
            } else {
                rc = ar_seterr(err, errlen, AR_EIO, "open folder %s: %s", shown, strerror(e));
            }
            goto out;
        }
        close(fd);
        fd = next;
    }
    *fd_out = fd;
    fd = -1;
    rc = AR_OK;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/* fdopendir that closes fd when it fails; the message names path. */
static int dir_stream(int fd, const char *path, DIR **out, char *err, size_t errlen)
{
    *out = fdopendir(fd);
    if (*out)
        return AR_OK;
    int e = errno;
    close(fd);
    return ar_seterr(err, errlen, AR_EIO, "open folder %s: %s", path, strerror(e));
}

/* The next entry of d other than "." and "..", or NULL at the end; a read
 * error sets *rc (naming path). */
static struct dirent *next_entry(DIR *d, const char *path, int *rc, char *err, size_t errlen)
{
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                *rc = ar_seterr(err, errlen, AR_EIO, "read folder %s: %s", path,
                                strerror(errno));
            return NULL;
        }
        const char *n = de->d_name;
        if (!(n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))))
            return de;
    }
}

/* Remove dir_fd/name whatever it is (file, symlink, folder tree), never
 * following symlinks.  Absent is not an error.  path names it in messages. */
static int remove_at(int dir_fd, const char *name, const char *path, int depth,
                     char *err, size_t errlen)
{
    struct stat st;

    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            return AR_OK;
        return ar_seterr(err, errlen, AR_EIO, "stat %s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dir_fd, name, 0) != 0 && errno != ENOENT)
            return ar_seterr(err, errlen, AR_EIO, "unlink %s: %s", path, strerror(errno));
        return AR_OK;
    }
    if (depth > MAX_DEPTH)
        return ar_seterr(err, errlen, AR_EIO, "remove %s: %s", path, strerror(ELOOP));

    /* Entries removed while reading a folder may make readdir skip others on
     * some filesystems: read again until the folder is empty. */
    for (int pass = 0; pass < 8; pass++) {
        int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT)
                return AR_OK;
            return ar_seterr(err, errlen, AR_EIO, "open folder %s: %s", path, strerror(errno));
        }
        DIR *d;
        int rc = dir_stream(fd, path, &d, err, errlen);
        if (rc)
            return rc;
        struct dirent *de;
        while ((de = next_entry(d, path, &rc, err, errlen)) != NULL) {
            const char *n = de->d_name;
            if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) {
                if (unlinkat(fd, n, 0) == 0 || errno == ENOENT)
                    continue;
                if (errno != EISDIR) {
                    int e = errno;
                    char *child = path_join(path, n, strlen(n));
                    rc = ar_seterr(err, errlen, AR_EIO, "unlink %s: %s",
                                   child ? child : path, strerror(e));
                    free(child);
                    break;
                }
            }
            char *child = path_join(path, n, strlen(n));
            if (!child) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory removing %s", path);
                break;
            }
            rc = remove_at(fd, n, child, depth + 1, err, errlen);
            free(child);
            if (rc)
                break;
        }
        closedir(d);
        if (rc)
            return rc;
        if (unlinkat(dir_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT)
            return AR_OK;
        if (errno != ENOTEMPTY && errno != EEXIST)
            return ar_seterr(err, errlen, AR_EIO, "rmdir %s: %s", path, strerror(errno));
    }
    return ar_seterr(err, errlen, AR_EIO, "rmdir %s: %s", path, strerror(ENOTEMPTY));
}

static int open_root(const char *root, int *fd, char *err, size_t errlen)
{
    *fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0)
        return ar_seterr(err, errlen, AR_EIO, "open storage folder %s: %s", root,
                         strerror(errno));
    return AR_OK;
}

int ar_mkdirs_at(const char *root, const char *rel, int *fd_out, char *err, size_t errlen)
{
    int root_fd = -1, fd = -1;
    int rc;

    if (fd_out)
        *fd_out = -1;
    if (!root || !rel)
        return ar_seterr(err, errlen, AR_ERR, "ar_mkdirs_at: bad arguments");
    if (!rel_ok(rel, strlen(rel)))
        return refuse_rel(root, rel, err, errlen);
    rc = open_root(root, &root_fd, err, errlen);
    if (rc)
        return rc;
    rc = walk_dirs(root_fd, root, rel, strlen(rel), 1, &fd, err, errlen);
    close(root_fd);
    if (rc)
        return rc;
    if (fd_out)
        *fd_out = fd;
    else
        close(fd);
    return AR_OK;
}

/* Split rel at its last '/': parent length (0 if none) and the last name. */
static const char *last_name(const char *rel, size_t *parent_len)
{
    const char *slash = strrchr(rel, '/');
    *parent_len = slash ? (size_t)(slash - rel) : 0;
    return slash ? slash + 1 : rel;
}

/* Open the folder that holds rel's last component (create it if asked). */
static int open_parent(int root_fd, const char *root, const char *rel, int create,
                       int *fd_out, char *err, size_t errlen)
{
    size_t plen;
    last_name(rel, &plen);
    if (plen == 0) {
        *fd_out = dup(root_fd);
        if (*fd_out < 0)
            return ar_seterr(err, errlen, AR_EIO, "dup %s: %s", root, strerror(errno));
        return AR_OK;
    }
    return walk_dirs(root_fd, root, rel, plen, create, fd_out, err, errlen);
}

int ar_remove_tree(const char *root, const char *rel, char *err, size_t errlen)
{
    int root_fd = -1, parent_fd = -1;
    char *path = NULL;
    int rc;

    if (!root || !rel)
        return ar_seterr(err, errlen, AR_ERR, "ar_remove_tree: bad arguments");
    if (!rel_ok(rel, strlen(rel)))
        return refuse_rel(root, rel, err, errlen);
    rc = open_root(root, &root_fd, err, errlen);
    if (rc)
        goto out;
    rc = open_parent(root_fd, root, rel, 0, &parent_fd, err, errlen);
    if (rc == AR_ENOTFOUND) {
        rc = AR_OK;  /* a parent is missing: nothing to remove */
        goto out;
    }
    if (rc)
        goto out;
    path = path_join(root, rel, strlen(rel));
    if (!path) {
        rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory removing %s/%s", root, rel);
        goto out;
    }
    size_t plen;
    rc = remove_at(parent_fd, last_name(rel, &plen), path, 0, err, errlen);
out:
    free(path);
    if (parent_fd >= 0)
        close(parent_fd);
    if (root_fd >= 0)
        close(root_fd);
    return rc;
}

static int ends_with_working(const char *name)
{
    size_t n = strlen(name), s = sizeof(WORKING_SUFFIX) - 1;
    return n > s && strcmp(name + n - s, WORKING_SUFFIX) == 0;
}

/* Visit the folders under dir_fd; remove the *.WORKING ones, descend into the
 * others.  Symlinks are neither followed nor removed. */
static int clean_walk(int dir_fd, const char *path, int depth, int *removed,
                      char *err, size_t errlen)
{
    if (depth > MAX_DEPTH)
        return ar_seterr(err, errlen, AR_EIO, "walk %s: %s", path, strerror(ELOOP));

    for (int pass = 0; pass < 8; pass++) {
        int again = 0;
        int fd = dup(dir_fd);
        if (fd < 0)
            return ar_seterr(err, errlen, AR_EIO, "dup %s: %s", path, strerror(errno));
        DIR *d;
        int rc = dir_stream(fd, path, &d, err, errlen);
        if (rc)
            return rc;
        rewinddir(d);  /* the dup shares its offset with dir_fd */
        struct dirent *de;
        while ((de = next_entry(d, path, &rc, err, errlen)) != NULL) {
            const char *n = de->d_name;
            if (de->d_type != DT_DIR) {
                struct stat st;
                if (de->d_type != DT_UNKNOWN)
                    continue;
                if (fstatat(dir_fd, n, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
                    continue;
            }
            char *child = path_join(path, n, strlen(n));
            if (!child) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory walking %s", path);
                break;
            }
            if (ends_with_working(n)) {
                rc = remove_at(dir_fd, n, child, 0, err, errlen);
                if (!rc) {
                    (*removed)++;
                    again = 1;
                }
            } else {
                int sub = openat(dir_fd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0) {
                    if (errno != ENOENT && errno != ELOOP && errno != ENOTDIR)
                        rc = ar_seterr(err, errlen, AR_EIO, "open folder %s: %s", child,
                                       strerror(errno));
                } else {
                    rc = clean_walk(sub, child, depth + 1, removed, err, errlen);
                    close(sub);
                }
            }
            free(child);
            if (rc)
                break;
        }
        closedir(d);
        if (rc || !again)
            return rc;
    }
    return AR_OK;
}

int ar_export_clean_working(const char *storage_root, int *removed, char *err, size_t errlen)
{
    int root_fd = -1;
    int count = 0;
    int rc;

    if (removed)
        *removed = 0;
    if (!storage_root)
        return ar_seterr(err, errlen, AR_ERR, "ar_export_clean_working: bad arguments");
    rc = open_root(storage_root, &root_fd, err, errlen);
    if (rc)
        return rc;
    rc = clean_walk(root_fd, storage_root, 0, &count, err, errlen);
    close(root_fd);
    if (removed)
        *removed = count;
    return rc;
}

/* After the download: chown every entry (when asked) and fsync every folder
 * (when asked), children first, then the folder itself. */
static int finish_tree(int dir_fd, const char *path, int do_fsync, uid_t uid, gid_t gid,
                       int do_chown, int depth, char *err, size_t errlen)
{
    int rc = AR_OK;

    if (depth > MAX_DEPTH)
        return ar_seterr(err, errlen, AR_EIO, "walk %s: %s", path, strerror(ELOOP));
    int fd = dup(dir_fd);
    if (fd < 0)
        return ar_seterr(err, errlen, AR_EIO, "dup %s: %s", path, strerror(errno));
    DIR *d;
    if ((rc = dir_stream(fd, path, &d, err, errlen)))
        return rc;
    rewinddir(d);
    struct dirent *de;
    while ((de = next_entry(d, path, &rc, err, errlen)) != NULL) {
        const char *n = de->d_name;
        int isdir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            isdir = fstatat(dir_fd, n, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        }
        if (do_chown && fchownat(dir_fd, n, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
            int e = errno;
            char *child = path_join(path, n, strlen(n));
            rc = ar_seterr(err, errlen, AR_EIO, "chown %s: %s", child ? child : path,
                           strerror(e));
            free(child);
            break;
        }
        if (isdir && (do_fsync || do_chown)) {
            char *child = path_join(path, n, strlen(n));
            if (!child) {
                rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory walking %s", path);
                break;
            }
            int sub = openat(dir_fd, n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                rc = ar_seterr(err, errlen, AR_EIO, "open folder %s: %s", child,
                               strerror(errno));
            } else {
                rc = finish_tree(sub, child, do_fsync, uid, gid, do_chown, depth + 1,
                                 err, errlen);
                close(sub);
            }
            free(child);
            if (rc)
                break;
        }
    }
    closedir(d);
    if (!rc && do_fsync && fsync(dir_fd) != 0)
        rc = ar_seterr(err, errlen, AR_EIO, "fsync %s: %s", path, strerror(errno));
    return rc;
}

/* fsync the storage root and every folder between it and the parent of
 * rel (rel[0..plen) is that parent), so folders created for this export
 * (a new rule folder, say) are durable too.  The parent itself is synced
 * by the caller. */
static int fsync_ancestors(int root_fd, const char *root, const char *rel, size_t plen,
                           char *err, size_t errlen)
{
    int fd = dup(root_fd);
    size_t i = 0;
    int rc = AR_OK;

    if (fd < 0)
        return ar_seterr(err, errlen, AR_EIO, "dup %s: %s", root, strerror(errno));
    for (;;) {
        if (fsync(fd) != 0) {
            rc = ar_seterr(err, errlen, AR_EIO, "fsync %s/%.*s: %s", root, (int)i, rel,
                           strerror(errno));
            break;
        }
        size_t start = i;
        while (i < plen && rel[i] != '/')
            i++;
        if (i >= plen)
            break;  /* the next one is the parent */
        char name[NAME_MAX + 1];
        size_t clen = i - start;
        if (clen > NAME_MAX)
            break;
        memcpy(name, rel + start, clen);
        name[clen] = '\0';
        i++;
        int next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            rc = ar_seterr(err, errlen, AR_EIO, "open folder %s/%.*s: %s", root,
                           (int)(i - 1), rel, strerror(errno));
            break;
        }
        close(fd);
        fd = next;
    }
    close(fd);
    return rc;
}

/* Orthanc identifiers are hex groups joined by '-'; anything else could
 * change the meaning of the URL. */
static int instance_id_ok(const char *id)
{
    if (!id || !*id)
        return 0;
    for (const char *p = id; *p; p++) {
        char c = *p;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* Create every folder the files need inside work_fd (consecutive files in
 * one folder cost one walk). */
static int make_file_dirs(int work_fd, const char *work_path, const ar_export_file *files,
                          size_t n, char *err, size_t errlen)
{
    const char *prev = NULL;
    size_t prev_len = 0;

    for (size_t i = 0; i < n; i++) {
        const char *rel = files[i].rel_path;
        if (!rel || !rel_ok(rel, strlen(rel)))
            return refuse_rel(work_path, rel ? rel : "(null)", err, errlen);
        size_t plen;
        last_name(rel, &plen);
        if (plen == 0 || (prev && plen == prev_len && memcmp(prev, rel, plen) == 0))
            continue;
        int fd = -1;
        int rc = walk_dirs(work_fd, work_path, rel, plen, 1, &fd, err, errlen);
        if (rc)
            return rc;
        close(fd);
        prev = rel;
        prev_len = plen;
    }
    return AR_OK;
}

/* Move the finished work folder onto the final name.  *replaced is set when
 * an older tree was swapped out; it then sits under the work name (or under
 * old_name for the non-atomic fallback) and *old_at names where. */
static int publish(int parent_fd, const char *work_name, const char *final_name,
                   const char *old_name, const char *final_path, int *replaced,
                   const char **old_at, char *err, size_t errlen)
{
    *replaced = 0;
    *old_at = NULL;
    if (rename2(parent_fd, work_name, parent_fd, final_name, RENAME_NOREPLACE) == 0)
        return AR_OK;
    if (errno == EEXIST || errno == ENOTEMPTY) {
        if (rename2(parent_fd, work_name, parent_fd, final_name, RENAME_EXCHANGE) == 0) {
            *replaced = 1;
            *old_at = work_name;
            return AR_OK;
        }
        if (errno != EINVAL && errno != ENOSYS)
            return ar_seterr(err, errlen, AR_EIO, "swap into %s: %s", final_path,
                             strerror(errno));
    } else if (errno != EINVAL && errno != ENOSYS) {
        return ar_seterr(err, errlen, AR_EIO, "rename to %s: %s", final_path, strerror(errno));
    }

    /* The filesystem has no renameat2 flags: move the old tree aside, then
     * rename (the final name is briefly absent, never partial). */
    struct stat st;
    if (fstatat(parent_fd, final_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT)
            return ar_seterr(err, errlen, AR_EIO, "stat %s: %s", final_path, strerror(errno));
        if (renameat(parent_fd, work_name, parent_fd, final_name) != 0)
            return ar_seterr(err, errlen, AR_EIO, "rename to %s: %s", final_path,
                             strerror(errno));
        return AR_OK;
    }
    if (renameat(parent_fd, final_name, parent_fd, old_name) != 0)
        return ar_seterr(err, errlen, AR_EIO, "move aside %s: %s", final_path, strerror(errno));
    if (renameat(parent_fd, work_name, parent_fd, final_name) != 0) {
        int e = errno;
        if (renameat(parent_fd, old_name, parent_fd, final_name) != 0)
            *old_at = old_name;  /* could not put it back: still needs cleaning */
        return ar_seterr(err, errlen, AR_EIO, "rename to %s: %s", final_path, strerror(e));
    }
    *replaced = 1;
    *old_at = old_name;
    return AR_OK;
}

int ar_export_download(ar_http *h, const char *storage_root, const char *final_rel,
                       const ar_export_file *files, size_t n, const ar_export_opts *o,
                       ar_export_result *res, char *err, size_t errlen)
{
    int rc = AR_ERR;
    int root_fd = -1, parent_fd = -1, work_fd = -1;
    int work_created = 0;
    char *final_path = NULL, *work_path = NULL, *work_name = NULL, *old_name = NULL;
    char *old_path = NULL;
    char *urls = NULL;
    ar_transfer_item *items = NULL;
    ar_transfer_result tres;
    const char *final_name;
    size_t plen;

    if (res)
        memset(res, 0, sizeof(*res));
    if (!h || !storage_root || !final_rel || !o || (n && !files))
        return ar_seterr(err, errlen, AR_ERR, "ar_export_download: bad arguments");
    if (!rel_ok(final_rel, strlen(final_rel)))
        return refuse_rel(storage_root, final_rel, err, errlen);

    final_name = last_name(final_rel, &plen);
    final_path = path_join(storage_root, final_rel, strlen(final_rel));
    work_name = malloc(strlen(final_name) + sizeof(WORKING_SUFFIX));
    old_name = malloc(strlen(final_name) + sizeof(".OLD" WORKING_SUFFIX));
    if (!final_path || !work_name || !old_name)
        goto nomem;
    sprintf(work_name, "%s%s", final_name, WORKING_SUFFIX);
    sprintf(old_name, "%s.OLD%s", final_name, WORKING_SUFFIX);
    work_path = malloc(strlen(final_path) + sizeof(WORKING_SUFFIX));
    old_path = malloc(strlen(final_path) + sizeof(".OLD" WORKING_SUFFIX));
    if (!work_path || !old_path)
        goto nomem;
    sprintf(work_path, "%s%s", final_path, WORKING_SUFFIX);
    sprintf(old_path, "%s.OLD%s", final_path, WORKING_SUFFIX);

    for (size_t i = 0; i < n; i++) {
        if (!instance_id_ok(files[i].instance_id)) {
            rc = ar_seterr(err, errlen, AR_ERR, "export %s: bad instance id '%s'", final_path,
                           files[i].instance_id ? files[i].instance_id : "(null)");
            goto out;
        }
    }

    rc = open_root(storage_root, &root_fd, err, errlen);
    if (rc)
        goto out;
    rc = open_parent(root_fd, storage_root, final_rel, 1, &parent_fd, err, errlen);
    if (rc)
        goto out;

    /* A crash may have left a work folder (or a moved-aside old tree). */
    rc = remove_at(parent_fd, work_name, work_path, 0, err, errlen);
    if (!rc)
        rc = remove_at(parent_fd, old_name, old_path, 0, err, errlen);
    if (rc)
        goto out;
    if (mkdirat(parent_fd, work_name, 0755) != 0) {
        rc = ar_seterr(err, errlen, AR_EIO, "mkdir %s: %s", work_path, strerror(errno));
        goto out;
    }
    work_created = 1;
    work_fd = openat(parent_fd, work_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (work_fd < 0) {
        rc = ar_seterr(err, errlen, AR_EIO, "open folder %s: %s", work_path, strerror(errno));
        goto out;
    }
    rc = make_file_dirs(work_fd, work_path, files, n, err, errlen);
    if (rc)
        goto out;

    /* "/instances/<id>/file" for every file, in one block. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += strlen(files[i].instance_id) + sizeof("/instances//file");
    if (n) {
        urls = malloc(total);
        items = calloc(n, sizeof(*items));
        if (!urls || !items)
            goto nomem;
    }
    char *u = urls;
    for (size_t i = 0; i < n; i++) {
        int w = sprintf(u, "/instances/%s/file", files[i].instance_id);
        items[i].url_path = u;
        items[i].rel_path = files[i].rel_path;
        items[i].expected_size = files[i].size;
        u += w + 1;
    }

    ar_transfer_opts topts = {
        .max_connections = o->max_connections > 0 ? o->max_connections : 1,
        .fsync = o->fsync,
        .stop = o->stop,
        .progress = o->progress,
        .progress_ud = o->progress_ud,
    };
    memset(&tres, 0, sizeof(tres));
    rc = ar_transfer_run(h, work_fd, items, n, &topts, &tres, err, errlen);
    if (res) {
        res->files = tres.files;
        res->bytes = tres.bytes;
        res->requests = tres.requests;
    }
    if (rc)
        goto out;
    if (o->verify_md5 && (rc = ar_md5_verify(h, work_fd, work_path, files, n, err, errlen)))
        goto out;

    int do_chown = o->uid >= 0 || o->gid >= 0;
    uid_t uid = o->uid >= 0 ? (uid_t)o->uid : (uid_t)-1;
    gid_t gid = o->gid >= 0 ? (gid_t)o->gid : (gid_t)-1;
    if (do_chown && fchown(work_fd, uid, gid) != 0) {
        rc = ar_seterr(err, errlen, AR_EIO, "chown %s: %s", work_path, strerror(errno));
        goto out;
    }
    if (do_chown || o->fsync) {
        rc = finish_tree(work_fd, work_path, o->fsync, uid, gid, do_chown, 0, err, errlen);
        if (rc)
            goto out;
    }

    int replaced = 0;
    const char *old_at = NULL;
    rc = publish(parent_fd, work_name, final_name, old_name, final_path, &replaced, &old_at,
                 err, errlen);
    if (rc)
        goto out;  /* the work folder is removed below; the old tree stays */
    work_created = 0;  /* the work folder is now the final folder */
    if (res)
        res->replaced = replaced;
    if (old_at) {
        /* The old tree now sits under a *.WORKING name; if it cannot be
         * removed here, the next ar_export_clean_working does it. */
        char tmp[512];
        if (remove_at(parent_fd, old_at, old_at == work_name ? work_path : old_path, 0, tmp,
                      sizeof(tmp)) != AR_OK)
            ar_seterr(err, errlen, AR_OK, "%s", tmp);
    }
    if (o->fsync) {
        /* The export is in place; only the durability of the rename (and of
         * new parent folders) is in doubt if this fails. */
        if (fsync(parent_fd) != 0) {
            rc = ar_seterr(err, errlen, AR_EIO, "fsync %s: %s", final_path, strerror(errno));
            goto out;
        }
        if (plen) {
            rc = fsync_ancestors(root_fd, storage_root, final_rel, plen, err, errlen);
            if (rc)
                goto out;
        }
    }
    rc = AR_OK;
    goto out;
nomem:
    rc = ar_seterr(err, errlen, AR_ENOMEM, "out of memory exporting %s",
                   final_path ? final_path : final_rel);
out:
    if (work_fd >= 0)
        close(work_fd);
    if (rc && work_created && parent_fd >= 0) {
        char tmp[512];
        remove_at(parent_fd, work_name, work_path, 0, tmp, sizeof(tmp));
    }
    if (parent_fd >= 0)
        close(parent_fd);
    if (root_fd >= 0)
        close(root_fd);
    free(items);
    free(urls);
    free(final_path);
    free(work_path);
    free(work_name);
    free(old_name);
    free(old_path);
    return rc;
}
