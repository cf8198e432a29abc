/* SPDX-License-Identifier: GPL-2.0 */
/* Loader for scx_depth: load, attach, wait for exit or SIGINT, report how it ended. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <signal.h>
#include <bpf/bpf.h>
#include <scx/common.h>
#include "scx_depth.bpf.skel.h"

static volatile int exit_req;

static void on_signal(int sig)
{
	exit_req = 1;
}

int main(int argc, char **argv)
{
	struct scx_depth *skel;
	struct bpf_link *link;
	int opt;

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	skel = SCX_OPS_OPEN(depth_ops, scx_depth);
	while ((opt = getopt(argc, argv, "d:h")) != -1) {
		switch (opt) {
		case 'd':
			skel->rodata->max_depth = strtoul(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: %s [-d MAX_QUEUED]\n", argv[0]);
			return opt != 'h';
		}
	}

	SCX_OPS_LOAD(skel, depth_ops, scx_depth, uei);
	link = SCX_OPS_ATTACH(skel, depth_ops, scx_depth);

	while (!exit_req && !UEI_EXITED(skel, uei))
		sleep(1);

	printf("enqueued=%llu deepest=%llu\n",
	       (unsigned long long)skel->bss->nr_enqueued,
	       (unsigned long long)skel->bss->deepest);
	bpf_link__destroy(link);
	UEI_REPORT(skel, uei);
	scx_depth__destroy(skel);
	return 0;
}
