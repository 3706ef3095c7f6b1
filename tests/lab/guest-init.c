/* vmshift lab guest /init (static, built by tests/lab/lab.sh into the guest
 * initramfs; the cached guest is rebuilt whenever this file changes).
 *
 * Mounts devtmpfs + proc, loads evdev.ko + button.ko (ACPI power button),
 * then forever:
 *   - dirties a working set of guest memory at a fixed rate,
 *   - prints one heartbeat line per second on ttyS0:
 *       lab-guest tick=N mono=SEC.MSEC dirtied_mib=M
 *   - on the ACPI power button (virsh shutdown): powers off, unless lab_acpi=0,
 *     in which case the press is logged and ignored.
 * First line after boot:
 *   lab-guest: start working_set=<MiB>MiB rate=<MiB/s>MiB/s acpi=<0|1> input_devs=<n>
 * Kernel command-line knobs: lab_dirty_mb=<MiB> (default 32),
 * lab_rate_mbs=<MiB/s> (default 20), lab_acpi=0|1 (default 1). */
#include <fcntl.h>
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

int main(void) {
    mkdir("/dev", 0755); mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mkdir("/proc", 0755); mount("proc", "/proc", "proc", 0, NULL);
    int fd = open("/dev/ttyS0", O_WRONLY | O_NOCTTY);
    if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
    setvbuf(stdout, NULL, _IONBF, 0);
    load("/evdev.ko"); load("/button.ko");
    usleep(200000);
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
    long acpi = param(cmd, "lab_acpi=", 1);
    size_t sz = (size_t)(mb > 0 ? mb : 1) << 20, pages = sz / 4096, pos = 0;
    unsigned char *buf = mmap(NULL, sz, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (buf == MAP_FAILED) { printf("lab-guest: mmap failed\n"); for (;;) pause(); }
    memset(buf, 0x5a, sz);
    long per_slice = rate * 256 / 100; /* pages per 10 ms slice */
    unsigned long tick = 0, dirtied = 0;
    struct timespec ts = {0, 10 * 1000 * 1000}, now;
    printf("lab-guest: start working_set=%ldMiB rate=%ldMiB/s acpi=%ld input_devs=%d\n",
           mb, rate, acpi ? 1L : 0L, nev);
    clock_gettime(CLOCK_MONOTONIC, &now);
    time_t next = now.tv_sec + 1;
    for (;;) {
        for (long i = 0; i < per_slice; i++) { buf[pos * 4096]++; pos = (pos + 1) % pages; }
        dirtied += per_slice;
        nanosleep(&ts, NULL);
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
