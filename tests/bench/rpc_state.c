/* rpc_state NAME -- the question vmshift's monitor asks libvirtd (open
 * qemu:///system, look the domain up by name, get its state, close), asked
 * over libvirt's RPC protocol (src/remote/remote_protocol.x, XDR over
 * /run/libvirt/libvirt-sock) without loading libvirt.so. Exits like monitor:
 * 0 active, 7 shut off, 1 otherwise. Part of the vmshift bench
 * (tests/bench/bench.py): a reference, not an agent. It measures, in the same
 * run, what a monitor costs when the process does not load libvirt.so.0 and
 * the 56 libraries behind it, i.e. how much of vmshift's monitor time and
 * RSS is that loading (see the report's monitor targets). */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define REMOTE_PROGRAM 0x20008086u
enum { OPEN = 1, CLOSE = 2, LOOKUP_BY_NAME = 23, GET_STATE = 212 };

static int fd;
static uint32_t serial;
static unsigned char buf[65536];

static size_t put_u32(unsigned char *p, uint32_t v) {
    v = htonl(v);
    memcpy(p, &v, 4);
    return 4;
}

static size_t put_str(unsigned char *p, const char *s) {
    size_t n = strlen(s), padded = (n + 3) & ~(size_t)3;
    put_u32(p, (uint32_t)n);
    memset(p + 4, 0, padded);
    memcpy(p + 4, s, n);
    return 4 + padded;
}

static int io(int write_, unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t r = write_ ? write(fd, p, n) : read(fd, p, n);
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One call: header (program, version 1, procedure, CALL, serial, OK) and
 * args out; the reply's payload into buf. Returns its length, -1 on error. */
static long call(int proc, const unsigned char *args, size_t len) {
    unsigned char msg[4096];
    size_t n = 4;
    uint32_t hdr[6] = {REMOTE_PROGRAM, 1, (uint32_t)proc, 0, ++serial, 0};
    for (int i = 0; i < 6; i++) n += put_u32(msg + n, hdr[i]);
    memcpy(msg + n, args, len);
    n += len;
    put_u32(msg, (uint32_t)n);
    uint32_t total;
    if (io(1, msg, n) || io(0, (unsigned char *)&total, 4)) return -1;
    total = ntohl(total);
    if (total < 28 || total - 4 > sizeof buf || io(0, buf, total - 4)) return -1;
    uint32_t status;
    memcpy(&status, buf + 20, 4);
    if (ntohl(status) != 0) return -1;
    memmove(buf, buf + 24, total - 28);
    return (long)(total - 28);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: rpc_state NAME\n");
        return 2;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, "/run/libvirt/libvirt-sock");
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) return 1;
    unsigned char a[1024];
    size_t n = put_u32(a, 1); /* remote_string: present */
    n += put_str(a + n, "qemu:///system");
    n += put_u32(a + n, 0); /* flags */
    if (call(OPEN, a, n) < 0) return 1;
    n = put_str(a, argv[1]);
    long dom = call(LOOKUP_BY_NAME, a, n); /* remote_nonnull_domain */
    if (dom < 0 || (size_t)dom + 4 > sizeof a) return 7; /* no such domain */
    memcpy(a, buf, (size_t)dom);
    n = (size_t)dom + put_u32(a + dom, 0); /* flags */
    if (call(GET_STATE, a, n) < 4) return 1;
    uint32_t state;
    memcpy(&state, buf, 4);
    state = ntohl(state);
    call(CLOSE, NULL, 0);
    /* virDomainState: 1 running, 2 blocked, 3 paused, 4 shutdown,
     * 5 shutoff, 6 crashed, 7 pmsuspended */
    return (state >= 1 && state <= 4) || state == 7 ? 0 : state == 5 ? 7 : 1;
}
