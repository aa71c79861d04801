/* testfs.h - file helpers shared by the unit tests (read a file whole, write
 * one, make and remove a scratch folder).  Test code only: a failure to make
 * or write a scratch file ends the test with exit(2), which is not a verdict
 * on the code under test. */
#ifndef AR_TESTFS_H
#define AR_TESTFS_H

#include <stddef.h>

/* The whole file, NUL-terminated, malloc'ed; NULL if it can't be read. */
char *tf_slurp(const char *path, size_t *len);
/* dir/name := text. */
void tf_write_file(const char *dir, const char *name, const char *text);
/* A new folder /tmp/<prefix>-XXXXXX (the last 16 returned stay valid). */
char *tf_new_dir(const char *prefix);
/* rm -r without following links. */
void tf_rm_tree(const char *dir);

#endif
