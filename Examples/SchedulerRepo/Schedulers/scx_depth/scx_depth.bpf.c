/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_depth: the example scheduler of a downstream "scheduler repo".
 *
 * One shared FIFO queue. Idle CPUs found at wakeup take the task directly; everything else
 * goes through the shared queue. It has one safety rule: if more than `max_depth` tasks are
 * ever waiting in the shared queue at once, the scheduler declares itself broken with
 * scx_bpf_error(), which makes the kernel disable it (exit kind error_bpf) and fall back to
 * the default scheduler. max_depth = 0 turns the rule off.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

#define SHARED_DSQ 0

const volatile u32 max_depth;	/* set by the loader (-d N) before load */
u64 nr_enqueued;		/* .bss: visible to the host in the failure dump */
u64 deepest;			/* deepest queue seen */

UEI_DEFINE(uei);

s32 BPF_STRUCT_OPS(depth_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, SCX_SLICE_DFL, 0);
	return cpu;
}

void BPF_STRUCT_OPS(depth_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 depth;

	__sync_fetch_and_add(&nr_enqueued, 1);
	scx_bpf_dsq_insert(p, SHARED_DSQ, SCX_SLICE_DFL, enq_flags);

	depth = scx_bpf_dsq_nr_queued(SHARED_DSQ);
	if (depth > deepest)
		deepest = depth;
	if (max_depth && depth > max_depth)
		scx_bpf_error("scx_depth: %d tasks queued, limit is %u", depth, max_depth);
}

void BPF_STRUCT_OPS(depth_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(SHARED_DSQ, 0);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(depth_init)
{
	return scx_bpf_create_dsq(SHARED_DSQ, -1);
}

void BPF_STRUCT_OPS(depth_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(depth_ops,
	       .select_cpu	= (void *)depth_select_cpu,
	       .enqueue		= (void *)depth_enqueue,
	       .dispatch	= (void *)depth_dispatch,
	       .init		= (void *)depth_init,
	       .exit		= (void *)depth_exit,
	       .name		= "depth");
