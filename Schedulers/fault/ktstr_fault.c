/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Loader for ktstr_fault.bpf.c: parse the fault knobs, load and attach the
 * scheduler, wait until it exits (or SIGINT/SIGTERM), then report the exit
 * twice on stderr: the usual "EXIT: reason (msg)" line and one machine-readable
 *   KTSTR_EXIT kind=<int> code=<int> reason=<reason>  msg=<msg>
 * line (two spaces before msg=, see docs/PROTOCOLS.md).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <scx/common.h>
#include "ktstr_fault.bpf.skel.h"

static const char usage[] =
"ktstr-fault: a sched_ext scheduler that fails on request (swift-ktstr's test scheduler)\n"
"\n"
"Usage: %s [options]\n"
"  --error-after N        scx_bpf_error() at the Nth enqueue            (-> error_bpf)\n"
"  --stall-pid-every N    never dispatch user tasks whose pid %% N == 0  (-> error_stall)\n"
"  --timeout-ms MS        watchdog timeout (default 3000)\n"
"  --exit-after N         scx_bpf_exit(code) at the Nth enqueue         (-> unreg_bpf)\n"
"  --code C               exit code for --exit-after (default 0)\n"
"  --bogus-dsq            insert into a DSQ that does not exist         (-> error)\n"
"  --bogus-after N        ... starting at the Nth enqueue (default 1)\n"
"  --favour-comm PREFIX   unfair on purpose: the first --favour-count user tasks whose\n"
"                         comm starts with PREFIX always run before every other task\n"
"  --favour-count N       how many tasks to favour (default 1 with --favour-comm; alone:\n"
"                         the first N user tasks of any comm)\n"
"  --favour-slice-ms MS   a favoured task's slice (default 200)\n"
"  -v, --verbose          libbpf debug messages\n"
"  -h, --help             this text\n";

enum { OPT_ERROR_AFTER = 256, OPT_STALL, OPT_TIMEOUT, OPT_EXIT_AFTER, OPT_CODE,
       OPT_BOGUS, OPT_BOGUS_AFTER, OPT_FAVOUR_COMM, OPT_FAVOUR_COUNT, OPT_FAVOUR_SLICE };

static const struct option long_options[] = {
	{ "error-after",     required_argument, NULL, OPT_ERROR_AFTER },
	{ "stall-pid-every", required_argument, NULL, OPT_STALL },
	{ "timeout-ms",      required_argument, NULL, OPT_TIMEOUT },
	{ "exit-after",      required_argument, NULL, OPT_EXIT_AFTER },
	{ "code",            required_argument, NULL, OPT_CODE },
	{ "bogus-dsq",       no_argument,       NULL, OPT_BOGUS },
	{ "bogus-after",     required_argument, NULL, OPT_BOGUS_AFTER },
	{ "favour-comm",     required_argument, NULL, OPT_FAVOUR_COMM },
	{ "favour-count",    required_argument, NULL, OPT_FAVOUR_COUNT },
	{ "favour-slice-ms", required_argument, NULL, OPT_FAVOUR_SLICE },
	{ "verbose",         no_argument,       NULL, 'v' },
	{ "help",            no_argument,       NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static bool verbose;
static volatile sig_atomic_t exit_req;

static int libbpf_print_fn(enum libbpf_print_level level, const char *format, va_list args)
{
	if (level == LIBBPF_DEBUG && !verbose)
		return 0;
	return vfprintf(stderr, format, args);
}

static void on_signal(int sig)
{
	(void)sig;
	exit_req = 1;
}

/* Whole numbers only: a typo must not silently arm a different fault. */
static long long parse_number(const char *opt, const char *s, long long min, long long max)
{
	char *end = NULL;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 0);
	if (errno || !end || *end != '\0' || end == s || v < min || v > max) {
		fprintf(stderr, "ktstr-fault: --%s takes a whole number in [%lld, %lld], not '%s'\n",
			opt, min, max, s);
		exit(2);
	}
	return v;
}

/* Prints the text with newlines flattened so the KTSTR_EXIT line stays one line. */
static void put_flat(const char *s)
{
	for (; *s; s++)
		fputc(*s == '\n' || *s == '\r' ? ' ' : *s, stderr);
}

static void report_exit(struct ktstr_fault *skel)
{
	struct user_exit_info *uei = &skel->data->uei;

	UEI_REPORT(skel, uei);
	fprintf(stderr, "KTSTR_EXIT kind=%d code=%lld reason=", uei->kind, (long long)uei->exit_code);
	put_flat(uei->reason);
	fputs("  msg=", stderr);
	put_flat(uei->msg);
	fputc('\n', stderr);
	fflush(stderr);
}

int main(int argc, char **argv)
{
	struct ktstr_fault *skel;
	struct bpf_link *link;
	long long error_after = 0, stall_every = 0, timeout_ms = 3000, exit_after = 0;
	long long code = 0, bogus_after = 1, favour_count = -1, favour_slice_ms = 200;
	const char *favour_comm = NULL;
	bool bogus = false;
	int opt;

	while ((opt = getopt_long(argc, argv, "vh", long_options, NULL)) != -1) {
		switch (opt) {
		case OPT_ERROR_AFTER: error_after = parse_number("error-after", optarg, 0, 1LL << 40); break;
		case OPT_STALL:       stall_every = parse_number("stall-pid-every", optarg, 0, 1 << 22); break;
		case OPT_TIMEOUT:     timeout_ms = parse_number("timeout-ms", optarg, 1, 30000); break;
		case OPT_EXIT_AFTER:  exit_after = parse_number("exit-after", optarg, 0, 1LL << 40); break;
		case OPT_CODE:        code = parse_number("code", optarg, -(1LL << 31), (1LL << 31) - 1); break;
		case OPT_BOGUS:       bogus = true; break;
		case OPT_BOGUS_AFTER: bogus_after = parse_number("bogus-after", optarg, 1, 1LL << 40); break;
		case OPT_FAVOUR_COMM:
			/* The BPF side compares at most TASK_COMM_LEN - 1 bytes. */
			if (strlen(optarg) > 15) {
				fprintf(stderr, "ktstr-fault: --favour-comm takes at most 15 bytes (a comm prefix), not '%s'\n", optarg);
				return 2;
			}
			favour_comm = optarg;
			break;
		case OPT_FAVOUR_COUNT: favour_count = parse_number("favour-count", optarg, 0, 64); break;
		case OPT_FAVOUR_SLICE: favour_slice_ms = parse_number("favour-slice-ms", optarg, 1, 10000); break;
		case 'v':             verbose = true; break;
		case 'h':             printf(usage, argv[0]); return 0;
		default:              fprintf(stderr, usage, argv[0]); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ktstr-fault: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}

	/* --favour-comm alone favours one task; --favour-count alone, any comm. */
	if (favour_count < 0)
		favour_count = favour_comm ? 1 : 0;

	libbpf_set_print(libbpf_print_fn);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	skel = SCX_OPS_OPEN(fault_ops, ktstr_fault);
	skel->bss->ktstr_knob_error_after = error_after;
	skel->bss->ktstr_knob_stall_pid_every = stall_every;
	skel->bss->ktstr_knob_exit_after = exit_after;
	skel->bss->ktstr_knob_exit_code = code;
	skel->bss->ktstr_knob_bogus_dsq = bogus;
	skel->bss->ktstr_knob_bogus_after = bogus_after;
	skel->bss->ktstr_knob_favour_count = favour_count;
	skel->bss->ktstr_knob_favour_slice_ns = (u64)favour_slice_ms * 1000000ULL;
	if (favour_comm)
		memcpy(skel->bss->ktstr_knob_favour_comm, favour_comm, strlen(favour_comm));
	skel->struct_ops.fault_ops->timeout_ms = (u32)timeout_ms;

	SCX_OPS_LOAD(skel, fault_ops, ktstr_fault, uei);

	/* Not SCX_OPS_ATTACH: when enabling fails because a fault already fired,
	 * the exit info is still worth reporting. */
	bpf_map__set_autoattach(skel->maps.fault_ops, false);
	if (ktstr_fault__attach(skel)) {
		fprintf(stderr, "ktstr-fault: attaching the skeleton failed: %s\n", strerror(errno));
		ktstr_fault__destroy(skel);
		return 1;
	}
	link = bpf_map__attach_struct_ops(skel->maps.fault_ops);
	if (!link) {
		int err = errno;

		if (UEI_EXITED(skel, uei)) {
			report_exit(skel);
			ktstr_fault__destroy(skel);
			return 0;
		}
		fprintf(stderr, "ktstr-fault: attaching the scheduler failed: %s "
			"(is another sched_ext scheduler loaded? is CONFIG_SCHED_CLASS_EXT on?)\n",
			strerror(err));
		ktstr_fault__destroy(skel);
		return 1;
	}
	printf("ktstr-fault: attached (error_after=%lld stall_pid_every=%lld timeout_ms=%lld "
	       "exit_after=%lld code=%lld bogus_dsq=%d bogus_after=%lld favour_count=%lld "
	       "favour_comm='%s' favour_slice_ms=%lld)\n",
	       error_after, stall_every, timeout_ms, exit_after, code, bogus, bogus_after,
	       favour_count, favour_comm ? favour_comm : "", favour_slice_ms);
	fflush(stdout);

	while (!exit_req && !UEI_EXITED(skel, uei))
		usleep(50 * 1000);

	bpf_link__destroy(link);
	printf("ktstr-fault: enqueued=%llu dispatched=%llu stall_dropped=%llu fired=%u "
	       "favoured_dispatched=%llu first_favoured_pid=%d\n",
	       (unsigned long long)skel->bss->ktstr_nr_enqueued,
	       (unsigned long long)skel->bss->ktstr_nr_dispatched,
	       (unsigned long long)skel->bss->ktstr_nr_stall_dropped, skel->bss->ktstr_fault_fired,
	       (unsigned long long)skel->bss->ktstr_nr_favour_dispatched,
	       skel->bss->ktstr_first_favoured_pid);
	fflush(stdout);
	report_exit(skel);
	ktstr_fault__destroy(skel);
	return 0;
}
