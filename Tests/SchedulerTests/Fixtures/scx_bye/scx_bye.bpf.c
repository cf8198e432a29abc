/* SPDX-License-Identifier: GPL-2.0 */
/*
 * scx_bye: a test fixture that is not ktstr-fault. A global FIFO scheduler that, after
 * `exit_after` enqueues, unregisters itself with scx_bpf_exit(exit_code, "bye"): a clean,
 * BPF-initiated exit (unreg_bpf) whose code only the kernel's exit record carries — the
 * loader reports through user_exit_info.h (UEI_REPORT), which prints no code.
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 exit_after = 50;
const volatile s64 exit_code = 42;
u64 nr_enqueued;
bool exited;

UEI_DEFINE(uei);

void BPF_STRUCT_OPS(bye_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
	if (__sync_fetch_and_add(&nr_enqueued, 1) + 1 >= exit_after && !exited) {
		exited = true;
		scx_bpf_exit(exit_code, "bye");
	}
}

void BPF_STRUCT_OPS(bye_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(bye_ops,
	       .enqueue		= (void *)bye_enqueue,
	       .exit		= (void *)bye_exit,
	       .name		= "bye");
