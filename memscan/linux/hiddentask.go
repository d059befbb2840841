package linux

import (
	"fmt"
	"slices"
)

// PF_EXITING (include/linux/sched.h): the task is in do_exit.
const pfExiting = 0x00000004

// maxCPUs bounds the per-CPU run queues read (NR_CPUS is at most 8192 on x86-64).
const maxCPUs = 8192

// taskLayout is what the hidden-task check reads besides the task walk's offsets.
type taskLayout struct {
	nsIDR                uint64 // pid_namespace.idr.idr_rt.xa_head
	xa                   xaLayout
	pidNr, pidTasks      uint64 // pid.numbers[0].nr, pid.tasks[PIDTYPE_PID].first
	taskPidLinks, leader uint64 // task_struct.pid_links[PIDTYPE_PID], task_struct.group_leader
	rqCurr, rqIdle       uint64
	haveRunqueues        bool
}

func (in *Inspector) taskLayout() (taskLayout, error) {
	var l taskLayout
	var errs []error
	get := func(s, path string) Field {
		f, err := in.T.Field(s, path)
		if err != nil {
			errs = append(errs, err)
		}
		return f
	}
	l.nsIDR = get("pid_namespace", "idr.idr_rt.xa_head").Offset
	l.xa.shift = get("xa_node", "shift").Offset
	slots := get("xa_node", "slots")
	l.xa.slots, l.xa.chunk = slots.Offset, int(slots.Size/8)
	l.pidNr = get("pid", "numbers").Offset + get("upid", "nr").Offset
	l.pidTasks = get("pid", "tasks").Offset
	l.taskPidLinks = get("task_struct", "pid_links").Offset
	l.leader = get("task_struct", "group_leader").Offset
	if len(errs) > 0 {
		return l, fmt.Errorf("kernel BTF: %v", errs)
	}
	cur, err1 := in.T.Field("rq", "curr")
	idle, err2 := in.T.Field("rq", "idle")
	if err1 == nil && err2 == nil {
		l.rqCurr, l.rqIdle, l.haveRunqueues = cur.Offset, idle.Offset, true
	}
	return l, nil
}

// HiddenTask is a task the kernel knows (its pid is allocated, or a CPU runs it) whose
// thread group leader is not on the task list.
type HiddenTask struct {
	Process
	// Seen says where: "pid hash" (init_pid_ns's IDR) and/or "running on CPU n".
	Seen []string
}

// hiddenTasks compares the task list (listed, as Processes returned it) with the
// tasks that own a pid in the initial pid namespace's IDR (every pid of every
// namespace is allocated there too) and the tasks each CPU's run queue runs. A
// thread counts through its group leader, since only leaders are on the task list.
// Candidates are confirmed by a second walk of the task list, so a task forked or
// reaped between the two reads is not reported. It returns the number of pids read.
func (in *Inspector) hiddenTasks(listed []Process) ([]HiddenTask, int, error) {
	l, err := in.taskLayout()
	if err != nil {
		return nil, 0, err
	}
	onList := map[uint64]bool{in.taskV: true}
	for _, p := range listed {
		onList[p.TaskVA] = true
	}
	found := map[uint64][]string{} // leader task_struct -> where seen
	var order []uint64
	note := func(leader uint64, where string) {
		if onList[leader] {
			return
		}
		if _, ok := found[leader]; !ok {
			order = append(order, leader)
		}
		if !slices.Contains(found[leader], where) {
			found[leader] = append(found[leader], where)
		}
	}
	ns, err := in.K.Syms.Addr("init_pid_ns")
	if err != nil {
		return nil, 0, err
	}
	head, err := in.u64(ns + l.nsIDR)
	if err != nil {
		return nil, 0, fmt.Errorf("init_pid_ns at %#x: idr head: %w", ns, err)
	}
	pids := 0
	err = walkXArray(in.K, head, l.xa, 2*maxTasks, func(_, pid uint64) error {
		pids++
		first, err := in.u64(pid + l.pidTasks)
		if err != nil {
			return fmt.Errorf("struct pid at %#x: tasks: %w", pid, err)
		}
		if first == 0 {
			return nil // a process-group or session id whose leader has exited
		}
		task := first - l.taskPidLinks
		leader, err := in.u64(task + l.leader)
		if err != nil {
			return fmt.Errorf("struct pid at %#x: task_struct at %#x: group_leader: %w", pid, task, err)
		}
		note(leader, "pid hash")
		return nil
	})
	if err != nil {
		return nil, pids, fmt.Errorf("init_pid_ns IDR at %#x: %w", ns+l.nsIDR, err)
	}
	if err := in.runningTasks(l, note); err != nil {
		return nil, pids, err
	}
	if len(order) == 0 {
		return nil, pids, nil
	}
	// Confirm: a second walk of the list.
	err = in.walkList("task", in.taskV+in.o.taskTasks, maxTasks, func(node uint64) error {
		delete(found, node-in.o.taskTasks)
		return nil
	})
	if err != nil {
		return nil, pids, fmt.Errorf("task list, second walk: %w", err)
	}
	var out []HiddenTask
	for _, leader := range order {
		where, ok := found[leader]
		if !ok {
			continue
		}
		p, err := in.process(leader)
		if err != nil {
			return nil, pids, fmt.Errorf("hidden task: %w", err)
		}
		out = append(out, HiddenTask{Process: p, Seen: where})
	}
	return out, pids, nil
}

// runningTasks notes the task each possible CPU's run queue runs (rq->curr), unless it
// is that CPU's idle task (idle tasks other than init_task are never on the task list).
func (in *Inspector) runningTasks(l taskLayout, note func(leader uint64, where string)) error {
	if !l.haveRunqueues {
		return nil
	}
	rqs, err1 := in.K.Syms.Addr("runqueues")
	offs, err2 := in.K.Syms.Addr("__per_cpu_offset")
	ncpu, err3 := in.K.Syms.Addr("nr_cpu_ids")
	if err1 != nil || err2 != nil || err3 != nil {
		return nil // a kernel without SMP per-CPU areas: the pid hash alone
	}
	n, err := in.u32(ncpu)
	if err != nil {
		return fmt.Errorf("nr_cpu_ids at %#x: %w", ncpu, err)
	}
	if n == 0 || n > maxCPUs {
		return fmt.Errorf("nr_cpu_ids at %#x is %d", ncpu, n)
	}
	for cpu := range uint64(n) {
		off, err := in.u64(offs + 8*cpu)
		if err != nil {
			return fmt.Errorf("__per_cpu_offset[%d]: %w", cpu, err)
		}
		rq := rqs + off
		cur, err := in.u64(rq + l.rqCurr)
		if err != nil {
			return fmt.Errorf("CPU %d run queue at %#x: curr: %w", cpu, rq, err)
		}
		idle, err := in.u64(rq + l.rqIdle)
		if err != nil {
			return fmt.Errorf("CPU %d run queue at %#x: idle: %w", cpu, rq, err)
		}
		if cur == idle || cur == 0 {
			continue
		}
		// A task that reaped itself (a thread, or a process whose parent ignores
		// SIGCHLD) leaves the task list in do_exit and runs on until it schedules for
		// the last time: an exiting task is not hidden.
		flags, err := in.u32(cur + in.o.taskFlags)
		if err != nil {
			return fmt.Errorf("CPU %d runs task_struct at %#x: flags: %w", cpu, cur, err)
		}
		if flags&pfExiting != 0 {
			continue
		}
		leader, err := in.u64(cur + l.leader)
		if err != nil {
			return fmt.Errorf("CPU %d runs task_struct at %#x: group_leader: %w", cpu, cur, err)
		}
		note(leader, fmt.Sprintf("running on CPU %d", cpu))
	}
	return nil
}
