/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ktstr-fault: a minimal global-FIFO sched_ext scheduler whose only purpose is
 * to fail on request, so swift-ktstr's own tests can check every exit path.
 *
 * Scheduling: every task goes to one shared DSQ (FAULT_DSQ); each CPU pulls
 * from it in ops.dispatch. select_cpu inserts straight into the local DSQ when
 * the default picker found an idle CPU (except for tasks chosen to stall, which
 * must only ever reach ops.enqueue, where they are dropped).
 *
 * Faults (each knob 0 = off), set by the loader before load:
 *   ktstr_knob_error_after N    scx_bpf_error() at the Nth enqueue   -> error_bpf
 *   ktstr_knob_error_now        scx_bpf_error() at the next enqueue  -> error_bpf
 *                               (never set by the loader: the host writes it in
 *                               guest memory mid-run, see LiveBPFMap.set)
 *   ktstr_knob_stall_pid_every N  user tasks with pid % N == 0 are never
 *                               dispatched; the watchdog fires       -> error_stall
 *   ktstr_knob_exit_after N     scx_bpf_exit(code) at the Nth enqueue -> unreg_bpf
 *   ktstr_knob_bogus_dsq        from the Nth enqueue on (ktstr_knob_bogus_after,
 *                               at least 1) insert into a DSQ that does not
 *                               exist; the kernel rejects it          -> error
 *
 * Unfairness (no exit; a true positive for the host's fairness and gap checks):
 *   ktstr_knob_favour_count N   the first N user tasks whose comm starts with
 *                               ktstr_knob_favour_comm ("" = any) are favoured:
 *                               they go to FAVOUR_DSQ, which every CPU drains
 *                               before the shared one, with a slice of
 *                               ktstr_knob_favour_slice_ns. A favoured spinner
 *                               keeps a CPU to itself; everyone else shares
 *                               what is left.
 *
 * Knobs and counters live in .bss under ktstr_* names so a failure dump that
 * prints this scheduler's .bss shows which fault was armed and how far it got.
 * ktstr_pid_enq, a small hash map (pid -> enqueues of user tasks, first 64
 * pids), shows hash map contents in the dump.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

#define FAULT_DSQ	0
/* Favoured tasks: drained before FAULT_DSQ by every CPU. */
#define FAVOUR_DSQ	1
/* Never created; a user DSQ id (bit 63 clear), recognizable in the kernel's message. */
#define BOGUS_DSQ	0x4b7457ULL

/* Knobs (written by the loader before load). */
u64 ktstr_knob_error_after;
u64 ktstr_knob_stall_pid_every;
u64 ktstr_knob_exit_after;
s64 ktstr_knob_exit_code;
u64 ktstr_knob_bogus_dsq;
u64 ktstr_knob_bogus_after;
u64 ktstr_knob_error_now;
u64 ktstr_knob_favour_count;
u64 ktstr_knob_favour_slice_ns;
/* NUL-terminated prefix of the comm of tasks to favour (TASK_COMM_LEN bytes). */
char ktstr_knob_favour_comm[16];

/* Progress. */
u64 ktstr_nr_enqueued;
u64 ktstr_nr_dispatched;
u64 ktstr_nr_stall_dropped;
s32 ktstr_last_stalled_pid;
/* 0 none, 1 error_after, 2 stall, 3 exit_after, 4 bogus_dsq, 5 error_now */
u32 ktstr_fault_fired;
/* ktstr_nr_enqueued when ktstr_knob_error_now was seen set. */
u64 ktstr_error_now_at;
/* Favour slots taken (may pass the count by a racing enqueue; only ≤ count get a slot). */
u64 ktstr_nr_favour_claims;
u64 ktstr_nr_favour_dispatched;
s32 ktstr_first_favoured_pid;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, s32);
	__type(value, u64);
} ktstr_pid_enq SEC(".maps");

static void count_pid(const struct task_struct *p)
{
	s32 pid = p->pid;
	u64 one = 1, *v;

	if (p->flags & PF_KTHREAD)
		return;
	v = bpf_map_lookup_elem(&ktstr_pid_enq, &pid);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&ktstr_pid_enq, &pid, &one, BPF_NOEXIST);
}

/* pid -> 1 for the favoured tasks (at most 64). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, s32);
	__type(value, u8);
} ktstr_favoured SEC(".maps");

UEI_DEFINE(uei);

static bool comm_has_favour_prefix(const struct task_struct *p)
{
	int i;

	for (i = 0; i < 16; i++) {
		char want = ktstr_knob_favour_comm[i];

		if (!want)
			return true;
		if (p->comm[i] != want)
			return false;
	}
	return true;
}

/* Favoured already, or the next of the first N matching tasks. */
static bool is_favoured(const struct task_struct *p)
{
	s32 pid = p->pid;
	u8 one = 1;
	u64 slot;

	if (!ktstr_knob_favour_count || (p->flags & PF_KTHREAD))
		return false;
	if (bpf_map_lookup_elem(&ktstr_favoured, &pid))
		return true;
	if (ktstr_nr_favour_claims >= ktstr_knob_favour_count || !comm_has_favour_prefix(p))
		return false;
	slot = __sync_fetch_and_add(&ktstr_nr_favour_claims, 1);
	if (slot >= ktstr_knob_favour_count)
		return false;
	if (bpf_map_update_elem(&ktstr_favoured, &pid, &one, BPF_NOEXIST))
		return false;
	if (!slot)
		ktstr_first_favoured_pid = pid;
	return true;
}

static bool should_stall(const struct task_struct *p)
{
	u64 every = ktstr_knob_stall_pid_every;

	if (!every || (p->flags & PF_KTHREAD))
		return false;
	return ((u64)p->pid % every) == 0;
}

s32 BPF_STRUCT_OPS(fault_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle && !should_stall(p))
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL,
				   is_favoured(p) ? ktstr_knob_favour_slice_ns : SCX_SLICE_DFL, 0);
	return cpu;
}

void BPF_STRUCT_OPS(fault_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 n = __sync_add_and_fetch(&ktstr_nr_enqueued, 1);
	u64 dsq = FAULT_DSQ;

	count_pid(p);
	if (ktstr_knob_error_now && !ktstr_error_now_at) {
		ktstr_error_now_at = n;
		ktstr_fault_fired = 5;
		scx_bpf_error("ktstr fault: error now (knob seen at enqueue %llu)", n);
	}
	if (ktstr_knob_error_after && n == ktstr_knob_error_after) {
		ktstr_fault_fired = 1;
		scx_bpf_error("ktstr fault: error after %llu enqueues", n);
	}
	if (ktstr_knob_exit_after && n == ktstr_knob_exit_after) {
		ktstr_fault_fired = 3;
		scx_bpf_exit(ktstr_knob_exit_code, "ktstr fault: exit after %llu enqueues (code %lld)",
			     n, ktstr_knob_exit_code);
	}
	if (should_stall(p)) {
		/* Dropped: the task stays runnable and is never dispatched. */
		ktstr_fault_fired = 2;
		ktstr_last_stalled_pid = p->pid;
		__sync_fetch_and_add(&ktstr_nr_stall_dropped, 1);
		return;
	}
	if (ktstr_knob_bogus_dsq && n >= ktstr_knob_bogus_after) {
		ktstr_fault_fired = 4;
		dsq = BOGUS_DSQ;
	} else if (is_favoured(p)) {
		scx_bpf_dsq_insert(p, FAVOUR_DSQ, ktstr_knob_favour_slice_ns, enq_flags);
		return;
	}
	scx_bpf_dsq_insert(p, dsq, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(fault_dispatch, s32 cpu, struct task_struct *prev)
{
	if (ktstr_knob_favour_count && scx_bpf_dsq_move_to_local(FAVOUR_DSQ, 0)) {
		__sync_fetch_and_add(&ktstr_nr_favour_dispatched, 1);
		return;
	}
	if (scx_bpf_dsq_move_to_local(FAULT_DSQ, 0))
		__sync_fetch_and_add(&ktstr_nr_dispatched, 1);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(fault_init)
{
	s32 ret = scx_bpf_create_dsq(FAULT_DSQ, -1);

	if (ret) {
		scx_bpf_error("ktstr fault: cannot create DSQ %d (%d)", FAULT_DSQ, ret);
		return ret;
	}
	ret = scx_bpf_create_dsq(FAVOUR_DSQ, -1);
	if (ret)
		scx_bpf_error("ktstr fault: cannot create DSQ %d (%d)", FAVOUR_DSQ, ret);
	return ret;
}

void BPF_STRUCT_OPS(fault_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(fault_ops,
	       .select_cpu	= (void *)fault_select_cpu,
	       .enqueue		= (void *)fault_enqueue,
	       .dispatch	= (void *)fault_dispatch,
	       .init		= (void *)fault_init,
	       .exit		= (void *)fault_exit,
	       .timeout_ms	= 3000U,
	       .name		= "ktstr_fault");
