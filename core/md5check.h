/* md5check.h - compare exported files with Orthanc's own MD5 of each one.
 *
 * For each file: GET /instances/<id>/attachments/dicom/md5 (Orthanc's MD5 of
 * the stored DICOM file) and the MD5 of the file on disk (OpenSSL's EVP:
 * libcrypto is already loaded by libcurl, and a hand-written hash is code we
 * would have to trust).  A mismatch is AR_ESIZE naming the file and both
 * sums, so the job is retried and the export never renamed.
 */
#ifndef AR_MD5CHECK_H
#define AR_MD5CHECK_H

#include <stddef.h>

#include "export.h"
#include "http.h"

/* MD5 of dir_fd/rel as 32 lower-case hex digits. */
int ar_md5_file_at(int dir_fd, const char *rel, char hex[33], char *err, size_t errlen);

int ar_md5_verify(ar_http *h, int dir_fd, const char *dir_path, const ar_export_file *files,
                  size_t n, char *err, size_t errlen);

#endif
