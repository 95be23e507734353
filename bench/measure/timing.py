"""Timing a command: wall clock, CPU of its process tree, sampled peak memory, the machine's load."""

import os
import subprocess
import sys
import tempfile
import threading
import time

from .pg import connect


def log(message):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def count_files(root):
    total = 0
    for _dirpath, _dirs, files in os.walk(root):
        total += len(files)
    return total


def tree_bytes(root):
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            total += os.path.getsize(os.path.join(dirpath, name))
    return total


def cpu_ticks():
    """(busy, iowait) jiffies of the whole machine, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal, iowait


def proc_status(pid, keys=("VmHWM", "VmRSS")):
    values = {}
    try:
        with open("/proc/%d/status" % pid, encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in keys:
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


def proc_cpu_seconds(pid):
    """user + system CPU seconds of one process so far (None when it is gone)."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class TreeSampler(threading.Thread):
    """Polls /proc for the peak memory of a process and of its descendants.

    ``VmHWM`` is per address space and starts afresh at exec, so unlike
    ru_maxrss it does not include the RSS of the (forking) parent. Sampled
    every ``interval`` seconds: a child's growth in its last interval before
    it exits can be missed, the engine's own high-water mark cannot.
    """

    def __init__(self, root, interval=0.1):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.stop = threading.Event()
        self.peaks = {}  # pid -> {"name", "hwm_kb"}
        self.max_total_rss_kb = 0

    @staticmethod
    def _status(pid):
        values = {}
        try:
            with open("/proc/%d/status" % pid, encoding="ascii", errors="replace") as handle:
                for line in handle:
                    key, _, rest = line.partition(":")
                    if key in ("Name", "VmHWM", "VmRSS"):
                        values[key] = rest.split()[0] if key == "Name" else int(rest.split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return values if "VmHWM" in values else None

    def _tree(self):
        children = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry, encoding="ascii", errors="replace") as handle:
                    ppid = int(handle.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        return tree

    def sample(self):
        total = 0
        for pid in self._tree():
            values = self._status(pid)
            if values is None:
                continue
            total += values.get("VmRSS", 0)
            peak = self.peaks.setdefault(pid, {"name": values.get("Name"), "hwm_kb": 0})
            peak["hwm_kb"] = max(peak["hwm_kb"], values["VmHWM"])
        self.max_total_rss_kb = max(self.max_total_rss_kb, total)

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def result(self):
        by_name = {}
        for pid, peak in self.peaks.items():
            name = "root" if pid == self.root else peak["name"]
            by_name[name] = max(by_name.get(name, 0), peak["hwm_kb"])
        return {"hwm_kb": by_name, "max_total_rss_kb": self.max_total_rss_kb}


_SETTLE = {"checkpoint": True}


def settle():
    """Before each measured step: dirty pages written out (sync) and a CHECKPOINT, so that no step pays for
    the writeback or the checkpoint of the step before it (a restore leaves about 2 GB of WAL behind)."""
    os.sync()
    if _SETTLE["checkpoint"]:
        try:
            conn = connect()
            try:
                with conn.cursor() as cr:
                    cr.execute("CHECKPOINT")
            finally:
                conn.close()
        except Exception as exc:  # not a superuser: sync only, said once
            _SETTLE["checkpoint"] = False
            log("no CHECKPOINT before the steps (%s); sync only" % str(exc).strip().splitlines()[0])


def timed(cmd, cwd=None, env=None, ok_codes=(0,)):
    """Run ``cmd``; wall seconds, CPU and memory of its process tree, stdout text.

    os.wait4 gives the rusage of the child including its reaped descendants:
    user/sys add up the whole tree (e.g. the engine plus its pg_dump). Its
    ru_maxrss is not used for memory: on Linux a child inherits its parent's
    high-water mark at fork, so it is never below this script's own RSS;
    TreeSampler's per-process VmHWM is reported instead.
    """
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    settle()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        ticks0 = cpu_ticks()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        sampler = None
        if os.path.isdir("/proc/%d" % proc.pid):
            sampler = TreeSampler(proc.pid)
            sampler.start()
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        ticks1 = cpu_ticks()
        if sampler is not None:
            sampler.stop.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode not in ok_codes:
        raise SystemExit(
            "command failed (exit %d): %s\n%s\n%s" % (proc.returncode, " ".join(cmd), stdout[-2000:], stderr[-4000:])
        )
    result = {
        "seconds": round(seconds, 3),
        "user_s": round(usage.ru_utime, 3),
        "sys_s": round(usage.ru_stime, 3),
        "wait4_maxrss_kb": usage.ru_maxrss,
    }
    if sampler is not None:
        result.update(sampler.result())
    if ticks0 and ticks1:
        result["machine_busy_cpu_s"] = round((ticks1[0] - ticks0[0]) / hz, 2)
        result["machine_iowait_s"] = round((ticks1[1] - ticks0[1]) / hz, 2)
    return result, stdout
