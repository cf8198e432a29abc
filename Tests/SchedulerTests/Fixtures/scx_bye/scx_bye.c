/* SPDX-License-Identifier: GPL-2.0 */
/* Loader for scx_bye: load, attach, wait for the exit or SIGINT, report it the way the
 * kernel's example schedulers do (UEI_REPORT: "EXIT: <reason> (<msg>)", no code). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <signal.h>
#include <bpf/bpf.h>
#include <scx/common.h>
#include "scx_bye.bpf.skel.h"

static volatile int exit_req;

static void on_signal(int sig)
{
	exit_req = 1;
}

int main(int argc, char **argv)
{
	struct scx_bye *skel;
	struct bpf_link *link;
	int opt;

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	skel = SCX_OPS_OPEN(bye_ops, scx_bye);
	while ((opt = getopt(argc, argv, "n:c:h")) != -1) {
		switch (opt) {
		case 'n':
			skel->rodata->exit_after = strtoull(optarg, NULL, 0);
			break;
		case 'c':
			skel->rodata->exit_code = strtoll(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: %s [-n ENQUEUES] [-c CODE]\n", argv[0]);
			return opt != 'h';
		}
	}

	SCX_OPS_LOAD(skel, bye_ops, scx_bye, uei);
	link = SCX_OPS_ATTACH(skel, bye_ops, scx_bye);

	while (!exit_req && !UEI_EXITED(skel, uei))
		usleep(100 * 1000);

	bpf_link__destroy(link);
	UEI_REPORT(skel, uei);
	scx_bye__destroy(skel);
	return 0;
}
