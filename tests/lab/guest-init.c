/* vmshift lab guest /init (static, built by tests/lab/lab.sh into the guest
 * initramfs; the cached guest is rebuilt whenever this file changes).
 *
 * Mounts devtmpfs + proc, loads evdev.ko + button.ko (ACPI power button)
 * and the virtio block stack, then forever:
 *   - dirties a working set of guest memory at a fixed rate,
 *   - prints one heartbeat line per second on ttyS0:
 *       lab-guest tick=N mono=SEC.MSEC dirtied_mib=M
 *   - when the guest has a disk (/dev/vda), keeps a write journal on it:
 *     every ~50 ms one 4 KiB record to slot seq % SLOTS, written with
 *     O_DIRECT|O_DSYNC, and only after the write returned:
 *       lab-guest disk gen=G seq=N
 *     (record format and checks: tests/lab/journal-check.py).
 *   - with lab_disk_mbs=N (a guest writing hard): the journal writes every
 *     ~10 ms instead, and a second process (the bulk writer) writes N MiB/s
 *     of 64 KiB O_DIRECT chunks over the rest of the disk, cyclically, and
 *     prints once a second:
 *       lab-guest bulk mib=M
 *   - on the ACPI power button (virsh shutdown): powers off, unless lab_acpi=0,
 *     in which case the press is logged and ignored.
 * First line after boot:
 *   lab-guest: start working_set=<MiB>MiB rate=<MiB/s>MiB/s acpi=<0|1> input_devs=<n>
 * Kernel command-line knobs: lab_dirty_mb=<MiB> (default 32),
 * lab_rate_mbs=<MiB/s> (default 20), lab_acpi=0|1 (default 1),
 * lab_disk_mbs=<MiB/s> (default 0: no bulk writer). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <linux/input.h>
#include <linux/reboot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long param(const char *c, const char *k, long d) {
    const char *p = strstr(c, k);
    return p ? atol(p + strlen(k)) : d;
}

static void load(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0) printf("lab-guest: cannot load %s\n", path);
    if (fd >= 0) close(fd);
}

/* The write journal. A record is 4096 bytes, little-endian:
 *   0  magic "VMSJRNL1"   8  gen (u64: boot generation, one more than the
 *   highest found on the disk at boot)   16 seq (u64, from 1 per boot)
 *   24 slots (u32)   28 zero (u32)   32 mono_ns (u64)
 *   40..4088 fill: byte i = (seq * 31 + i) & 0xff
 *   4088 FNV-1a 64 of bytes 0..4088 */
#define J_REC 4096
#define J_SLOTS 256
static uint64_t fnv(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return h;
}
static int j_fd = -1;
static unsigned char *j_buf;
static uint64_t j_gen, j_seq;

static void journal_open(void) {
    j_fd = open("/dev/vda", O_RDWR | O_DIRECT | O_DSYNC | O_CLOEXEC);
    if (j_fd < 0) return;
    if (posix_memalign((void **)&j_buf, 4096, J_REC) != 0) { close(j_fd); j_fd = -1; return; }
    for (int s = 0; s < J_SLOTS; s++) {
        if (pread(j_fd, j_buf, J_REC, (off_t)s * J_REC) != J_REC) break;
        uint64_t g, sum;
        memcpy(&sum, j_buf + J_REC - 8, 8);
        if (memcmp(j_buf, "VMSJRNL1", 8) != 0 || sum != fnv(j_buf, J_REC - 8)) continue;
        memcpy(&g, j_buf + 8, 8);
        if (g > j_gen) j_gen = g;
    }
    j_gen++;
    printf("lab-guest: disk journal on /dev/vda gen=%llu slots=%d\n",
           (unsigned long long)j_gen, J_SLOTS);
}

static void journal_write(void) {
    struct timespec now;
    uint64_t seq = ++j_seq, mono, sum;
    uint32_t slots = J_SLOTS, zero = 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    mono = (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
    memcpy(j_buf, "VMSJRNL1", 8);
    memcpy(j_buf + 8, &j_gen, 8);
    memcpy(j_buf + 16, &seq, 8);
    memcpy(j_buf + 24, &slots, 4);
    memcpy(j_buf + 28, &zero, 4);
    memcpy(j_buf + 32, &mono, 8);
    for (int i = 40; i < J_REC - 8; i++) j_buf[i] = (unsigned char)(seq * 31 + (uint64_t)i);
    sum = fnv(j_buf, J_REC - 8);
    memcpy(j_buf + J_REC - 8, &sum, 8);
    if (pwrite(j_fd, j_buf, J_REC, (off_t)(seq % J_SLOTS) * J_REC) == J_REC)
        printf("lab-guest disk gen=%llu seq=%llu\n", (unsigned long long)j_gen,
               (unsigned long long)seq);
    else
        printf("lab-guest disk gen=%llu seq=%llu write failed\n", (unsigned long long)j_gen,
               (unsigned long long)seq);
}

/* The bulk writer's blocks, 4096 bytes each, after the journal's slots:
 *   0 magic "VMSBULK1"   8 gen (the journal's)   16 n (u64: the chunk
 *   number, from 1 per boot)   24 block (u32: its index on the disk)
 *   28 zero (u32)   32..4096 fill: every byte n & 0xff
 * A 64 KiB chunk is 16 blocks of one n. No checksum: memset keeps a TCG
 * guest fast enough, and a torn block still shows as mixed fill. */
#define B_CHUNK 65536
static void bulk_writer(long mbs) {
    int fd = open("/dev/vda", O_RDWR | O_DIRECT | O_CLOEXEC);
    unsigned char *b;
    off_t first = (off_t)J_SLOTS * J_REC, end = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
    if (fd < 0 || end < first + B_CHUNK || posix_memalign((void **)&b, 4096, B_CHUNK) != 0) {
        printf("lab-guest: no bulk writer (disk too small)\n");
        _exit(0);
    }
    uint64_t n = 0, written = 0;
    off_t at = first;
    struct timespec t0, now, nap = {0, 10 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    time_t next = t0.tv_sec + 1;
    printf("lab-guest: bulk writer on /dev/vda at %ld MiB/s over %lld KiB\n", mbs,
           (long long)(end - first) / 1024);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double due = ((now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9) * mbs * 1048576.0;
        while ((double)written < due) {
            if (at + B_CHUNK > end) at = first;
            n++;
            memset(b, (int)(n & 0xff), B_CHUNK);
            for (int i = 0; i < B_CHUNK / J_REC; i++) {
                unsigned char *r = b + i * J_REC;
                uint32_t block = (uint32_t)(at / J_REC) + (uint32_t)i, zero = 0;
                memcpy(r, "VMSBULK1", 8);
                memcpy(r + 8, &j_gen, 8);
                memcpy(r + 16, &n, 8);
                memcpy(r + 24, &block, 4);
                memcpy(r + 28, &zero, 4);
            }
            if (pwrite(fd, b, B_CHUNK, at) != B_CHUNK) printf("lab-guest bulk write failed\n");
            at += B_CHUNK;
            written += B_CHUNK;
        }
        if (now.tv_sec >= next) {
            next = now.tv_sec + 1;
            printf("lab-guest bulk mib=%llu\n", (unsigned long long)(written >> 20));
        }
        nanosleep(&nap, NULL);
    }
}

int main(void) {
    mkdir("/dev", 0755); mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mkdir("/proc", 0755); mount("proc", "/proc", "proc", 0, NULL);
    int fd = open("/dev/ttyS0", O_WRONLY | O_NOCTTY);
    if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
    setvbuf(stdout, NULL, _IONBF, 0);
    load("/evdev.ko"); load("/button.ko");
    /* virtio_blk and what it needs, in dependency order */
    load("/virtio_ring.ko"); load("/virtio.ko"); load("/virtio_pci_modern_dev.ko");
    load("/virtio_pci_legacy_dev.ko"); load("/virtio_pci.ko"); load("/virtio_blk.ko");
    usleep(200000);
    journal_open();
    int ev[8], nev = 0;
    for (int i = 0; i < 8; i++) {
        char p[32]; snprintf(p, sizeof p, "/dev/input/event%d", i);
        int e = open(p, O_RDONLY | O_NONBLOCK);
        if (e >= 0) ev[nev++] = e;
    }
    char cmd[4096] = {0};
    int cf = open("/proc/cmdline", O_RDONLY);
    if (cf >= 0) { if (read(cf, cmd, sizeof cmd - 1) < 0) cmd[0] = 0; close(cf); }
    long mb = param(cmd, "lab_dirty_mb=", 32), rate = param(cmd, "lab_rate_mbs=", 20);
    long acpi = param(cmd, "lab_acpi=", 1), disk_mbs = param(cmd, "lab_disk_mbs=", 0);
    if (j_fd >= 0 && disk_mbs > 0 && fork() == 0) bulk_writer(disk_mbs);
    size_t sz = (size_t)(mb > 0 ? mb : 1) << 20, pages = sz / 4096, pos = 0;
    unsigned char *buf = mmap(NULL, sz, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (buf == MAP_FAILED) { printf("lab-guest: mmap failed\n"); for (;;) pause(); }
    memset(buf, 0x5a, sz);
    long per_slice = rate * 256 / 100; /* pages per 10 ms slice */
    unsigned long tick = 0, dirtied = 0, slice = 0;
    struct timespec ts = {0, 10 * 1000 * 1000}, now;
    printf("lab-guest: start working_set=%ldMiB rate=%ldMiB/s acpi=%ld input_devs=%d\n",
           mb, rate, acpi ? 1L : 0L, nev);
    clock_gettime(CLOCK_MONOTONIC, &now);
    time_t next = now.tv_sec + 1;
    for (;;) {
        for (long i = 0; i < per_slice; i++) { buf[pos * 4096]++; pos = (pos + 1) % pages; }
        dirtied += per_slice;
        nanosleep(&ts, NULL);
        if (j_fd >= 0 && (++slice % 5 == 0 || disk_mbs > 0)) journal_write();
        for (int i = 0; i < nev; i++) {
            struct input_event ie;
            while (read(ev[i], &ie, sizeof ie) == (ssize_t)sizeof ie)
                if (ie.type == EV_KEY && ie.code == KEY_POWER && ie.value == 1) {
                    if (!acpi) {
                        printf("lab-guest: ACPI power button ignored (lab_acpi=0)\n");
                        continue;
                    }
                    printf("lab-guest: ACPI power button -> power off\n");
                    sync(); reboot(LINUX_REBOOT_CMD_POWER_OFF);
                }
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec >= next) {
            /* one line per second; after a long pause (e.g. migration
             * downtime) no burst of catch-up lines */
            next = now.tv_sec + 1;
            printf("lab-guest tick=%lu mono=%ld.%03ld dirtied_mib=%lu\n", ++tick,
                   (long)now.tv_sec, now.tv_nsec / 1000000, dirtied / 256);
        }
    }
}
