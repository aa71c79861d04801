/* dirsig.c - see dirsig.h */
#include "dirsig.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

/* FNV-1a, folded per entry with a commutative sum so readdir order does not matter. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int has_suffix(const char *name, const char *const *suffixes)
{
    size_t n = strlen(name);
    for (size_t i = 0; suffixes && suffixes[i]; i++) {
        size_t m = strlen(suffixes[i]);
        if (n >= m && strcmp(name + n - m, suffixes[i]) == 0)
            return 1;
    }
    return 0;
}

uint64_t ar_dirsig(const char *dir, const char *const *suffixes)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0x6d697373696e67ULL; /* "missing" */
    uint64_t sum = 0;
    int dfd = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!has_suffix(de->d_name, suffixes))
            continue;
        struct stat st;
        if (fstatat(dfd, de->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode))
            continue;
        uint64_t h = 14695981039346656037ULL;
        h = fnv(h, de->d_name, strlen(de->d_name));
        h = fnv(h, &st.st_size, sizeof st.st_size);
        h = fnv(h, &st.st_mtim.tv_sec, sizeof st.st_mtim.tv_sec);
        h = fnv(h, &st.st_mtim.tv_nsec, sizeof st.st_mtim.tv_nsec);
        h = fnv(h, &st.st_ino, sizeof st.st_ino);
        sum += h;
    }
    closedir(d);
    return sum ^ 0x5a5a5a5a5a5a5a5aULL;
}
