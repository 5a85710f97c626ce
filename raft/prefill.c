/* Raft's open segments written through with zeros before raft uses them.
 *
 * Why. raft 0.15's libuv io prepares each open segment ("open-N", 8 MiB) on
 * the thread pool with posix_fallocate(), then appends to it with O_DIRECT |
 * O_DSYNC writes submitted as kernel AIO with RWF_NOWAIT. fallocate leaves
 * *unwritten* extents: the first write into each block must convert its
 * extent, which is a metadata change, so on ext4 and XFS the kernel answers
 * that RWF_NOWAIT write with EAGAIN; raft then resubmits it, blocking, from
 * its thread pool, and the O_DSYNC write waits for a journal commit on top of
 * its data. Every write that reaches a new block pays for that: a hop through
 * the pool and a journal commit. Into blocks that hold written zeros, a
 * direct O_DSYNC write is a plain overwrite: no metadata to commit, no EAGAIN,
 * completed straight from the loop's AIO poll.
 *
 * How. raft 0.15 has no hook for segment preparation, and it is the only
 * caller of posix_fallocate in this process (RocksDB calls fallocate(2)
 * itself). So this file defines posix_fallocate: the executable's definition
 * comes first in the dynamic linker's search order, so libraft's calls reach
 * it (tests/unit/raft test_raft_prefill checks that they do). It
 * allocates with fallocate(2) as glibc's does and then, for a file named
 * open-* in a directory registered by a raft instance, writes the range with
 * zeros through a second descriptor without O_DSYNC (reopened from
 * /proc/self/fd) and fdatasyncs once. It runs where raft calls it, on the
 * thread pool, ahead of need: raft keeps a prepared segment in reserve.
 * The bytes are the same zeros the allocated range reads as, so raft's
 * reading of open segments is unchanged.
 *
 * Failure modes: fallocate(2) unsupported (EOPNOTSUPP) -> zeros are written
 * when the range lies past the end of the file (glibc emulates it likewise;
 * bytes a file holds are never overwritten), else EOPNOTSUPP; writing zeros
 * fails -> its error number is returned, as posix_fallocate does, and raft
 * fails the segment (RAFT_IOERR / RAFT_NOSPACE) as it would have.
 */
#include "raft/io.h"
#include "raft/raft.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DIRS 16
#define CHUNK (1u << 20)

static pthread_mutex_t dirs_mu = PTHREAD_MUTEX_INITIALIZER;
static char *dirs[MAX_DIRS];
static _Atomic unsigned long prefilled;

int tr_raft_prefill_register(const char *dir)
{
    char real[4096];
    if (realpath(dir, real) == NULL)
        return TR_ESYS;
    pthread_mutex_lock(&dirs_mu);
    int rv = TR_EFULL;
    for (int i = 0; i < MAX_DIRS; i++)
        if (dirs[i] == NULL) {
            dirs[i] = tr_strdup(real);
            rv = TR_OK;
            break;
        }
    pthread_mutex_unlock(&dirs_mu);
    return rv;
}

void tr_raft_prefill_unregister(const char *dir)
{
    char real[4096];
    if (realpath(dir, real) == NULL)
        return;
    pthread_mutex_lock(&dirs_mu);
    for (int i = 0; i < MAX_DIRS; i++)
        if (dirs[i] != NULL && strcmp(dirs[i], real) == 0) {
            tr_free(dirs[i]);
            dirs[i] = NULL;
            break;
        }
    pthread_mutex_unlock(&dirs_mu);
}

unsigned long tr_raft_prefill_count(void)
{
    return prefilled;
}

/* Is fd an open segment in a registered raft directory? */
static int is_segment(int fd)
{
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    if (slash == NULL || strncmp(slash + 1, "open-", 5) != 0)
        return 0;
    *slash = '\0';
    int found = 0;
    pthread_mutex_lock(&dirs_mu);
    for (int i = 0; i < MAX_DIRS && !found; i++)
        found = dirs[i] != NULL && strcmp(dirs[i], path) == 0;
    pthread_mutex_unlock(&dirs_mu);
    return found;
}

/* Write [offset, offset + len) with zeros and make them durable; 0 or an
 * error number. */
static int write_zeros(int fd, off_t offset, off_t len)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int wfd = open(link, O_WRONLY | O_CLOEXEC); /* without the caller's O_DSYNC */
    int use = wfd >= 0 ? wfd : fd;
    char *zeros = calloc(1, CHUNK);
    int rv = zeros == NULL ? ENOMEM : 0;
    for (off_t at = offset; rv == 0 && at < offset + len;) {
        size_t want = (size_t)(offset + len - at) < CHUNK ? (size_t)(offset + len - at) : CHUNK;
        ssize_t n = pwrite(use, zeros, want, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rv = n < 0 ? errno : EIO;
        else
            at += n;
    }
    if (rv == 0 && fdatasync(use) != 0)
        rv = errno;
    free(zeros);
    if (wfd >= 0)
        close(wfd);
    return rv;
}

__attribute__((visibility("default"))) int posix_fallocate(int fd, off_t offset, off_t len)
{
    if (offset < 0 || len <= 0)
        return EINVAL;
    /* Zeros only past the end of the file: never over bytes it holds. */
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno;
    int fresh = st.st_size <= offset;
    while (fallocate(fd, 0, offset, len) != 0) {
        if (errno == EINTR)
            continue;
        if (errno != EOPNOTSUPP || !fresh)
            return errno;
        return write_zeros(fd, offset, len); /* what glibc would emulate */
    }
    if (!fresh || !is_segment(fd))
        return 0;
    int rv = write_zeros(fd, offset, len);
    if (rv == 0)
        prefilled++;
    return rv;
}
