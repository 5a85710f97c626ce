/* bench_disk: the latency of one durable 4 KiB write on the disk a benchmark
 * runs on, so that every run of a durable figure says which disk it met.
 *
 *   bench_disk DIR NAME
 *
 * Writes a 1.6 MiB file in DIR through once, then rewrites its 4 KiB blocks
 * one at a time with O_DIRECT | O_DSYNC (what raft's log writes do: the
 * block is already allocated and written, so each write is the data plus the
 * disk's cache flush), 300 µs apart, and prints
 *   bench: NAME.disk_write_p50_us <v> us
 *   bench: NAME.disk_write_p90_us <v> us
 * The file is removed. The disk is shared with other machines' work: its
 * latency moves from minute to minute, and every durable figure with it.
 * (_GNU_SOURCE, for O_DIRECT, comes from the build.) */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define WRITES 400

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: bench_disk DIR NAME\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/bench-disk.tmp", argv[1]);
    void *buf;
    if (posix_memalign(&buf, BLOCK, BLOCK) != 0)
        return 1;
    memset(buf, 0x5a, BLOCK);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    for (int i = 0; i < WRITES; i++) {
        if (pwrite(fd, buf, BLOCK, (off_t)i * BLOCK) != BLOCK) {
            perror("pwrite");
            return 1;
        }
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        perror("fsync");
        return 1;
    }
    fd = open(path, O_RDWR | O_DIRECT | O_DSYNC);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    double d[WRITES];
    for (int i = 0; i < WRITES; i++) {
        double t = now_us();
        if (pwrite(fd, buf, BLOCK, (off_t)i * BLOCK) != BLOCK) {
            perror("pwrite O_DIRECT");
            return 1;
        }
        d[i] = now_us() - t;
        struct timespec pause = { 0, 300 * 1000 };
        nanosleep(&pause, NULL);
    }
    close(fd);
    unlink(path);
    free(buf);
    qsort(d, WRITES, sizeof d[0], cmp);
    printf("bench: %s.disk_write_p50_us %.1f us\n", argv[2], d[WRITES / 2]);
    printf("bench: %s.disk_write_p90_us %.1f us\n", argv[2], d[WRITES * 9 / 10]);
    return 0;
}
