/* rusage_exec OUTFILE CMD [ARG...] -- runs CMD, writes its peak RSS (KiB,
 * the child's ru_maxrss) to OUTFILE and exits with CMD's status (128+signal
 * when killed). Part of the vmshift bench (tests/bench/bench.py), run inside
 * a lab node by node_runner.py.
 *
 * Why not os.wait4() in Python: Linux carries the RSS a forked child had
 * before exec() into its ru_maxrss, so a child of the ~10 MiB Python runner
 * never reports less than ~10 MiB, whatever it execs (/bin/true: ~9.5 MiB
 * from Python, ~1 MiB through this). This spawner is static and tiny: what
 * it passes on stays below any real program's own RSS. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: rusage_exec OUTFILE CMD [ARG...]\n");
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 126; }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0) { perror("wait4"); return 126; }
    FILE *f = fopen(argv[1], "w");
    if (!f || fprintf(f, "%ld\n", ru.ru_maxrss) < 0 || fclose(f) != 0) { perror(argv[1]); return 126; }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
