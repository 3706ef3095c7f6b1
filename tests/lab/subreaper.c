/*
 * subreaper CMD [ARG...]: runs CMD as a child subreaper (prctl(2)
 * PR_SET_CHILD_SUBREAPER, kept across execve). The labs start each node's
 * holder shell under it: the QEMUs libvirtd daemonizes are then reparented
 * to the holder, whose shell reaps them the moment they exit, as systemd
 * does on a real host. This machine's init reaps an orphan only 1.2-1.8 s
 * after it exits, and libvirt waits for that (virProcessKillPainfully polls
 * every 200 ms until the pid is gone) in every destroy and in every
 * migration's Confirm on the source.
 */
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: subreaper CMD [ARG...]\n");
		return 2;
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
		perror("subreaper: prctl");
		return 1;
	}
	execvp(argv[1], argv + 1);
	perror(argv[1]);
	return 127;
}
