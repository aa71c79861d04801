/* md5check.c - see md5check.h */
#include "md5check.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "err.h"

int ar_md5_file_at(int dir_fd, const char *rel, char hex[33], char *err, size_t errlen)
{
    int rc = AR_ERR, fd = -1;
    EVP_MD_CTX *ctx = NULL;
    unsigned char buf[1 << 16], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    fd = openat(dir_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        rc = ar_seterr(err, errlen, AR_EIO, "open %s: %s", rel, strerror(errno));
        goto out;
    }
    ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1) {
        rc = ar_seterr(err, errlen, AR_ERR, "MD5 is not available from libcrypto");
        goto out;
    }
    for (;;) {
        ssize_t k = read(fd, buf, sizeof buf);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            rc = ar_seterr(err, errlen, AR_EIO, "read %s: %s", rel, strerror(errno));
            goto out;
        }
        if (k == 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)k);
    }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    for (unsigned i = 0; i < mdlen && i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[32] = 0;
    rc = AR_OK;
out:
    EVP_MD_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Orthanc answers the MD5 as text, maybe quoted or with a newline. */
static int parse_md5(const char *body, size_t len, char out[33])
{
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (isxdigit((unsigned char)c)) {
            if (k == 32)
                return -1;
            out[k++] = (char)tolower((unsigned char)c);
        } else if (c != '"' && !isspace((unsigned char)c)) {
            return -1;
        }
    }
    out[k] = 0;
    return k == 32 ? 0 : -1;
}

int ar_md5_verify(ar_http *h, int dir_fd, const char *dir_path, const ar_export_file *files,
                  size_t n, char *err, size_t errlen)
{
    char path[256], want[33], have[33];
    ar_buf b = {0};
    int rc = AR_OK;
    for (size_t i = 0; i < n && rc == AR_OK; i++) {
        snprintf(path, sizeof path, "/instances/%s/attachments/dicom/md5", files[i].instance_id);
        if ((rc = ar_http_get(h, path, &b, err, errlen)))
            break;
        if (parse_md5(b.data, b.len, want) != 0) {
            rc = ar_seterr(err, errlen, AR_ENET, "Orthanc's MD5 for instance %s is not an MD5",
                           files[i].instance_id);
            break;
        }
        ar_buf_free(&b);
        if ((rc = ar_md5_file_at(dir_fd, files[i].rel_path, have, err, errlen)))
            break;
        if (strcmp(want, have) != 0)
            rc = ar_seterr(err, errlen, AR_ESIZE,
                           "MD5 mismatch for %s/%s (instance %s): Orthanc has %s, we got %s",
                           dir_path, files[i].rel_path, files[i].instance_id, want, have);
    }
    ar_buf_free(&b);
    return rc;
}
