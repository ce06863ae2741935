"""Helpers shared by the bench scripts: ports, readiness, stopping by PID, Postfix tools."""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, proc=None, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def stop(proc):
    """SIGTERM, then the CPU seconds (user + system) the process and its reaped children used."""
    proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def stop_all(procs):
    """Stops the processes we started, last first: SIGTERM, then SIGKILL after 30 s."""
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_bench_sink(bench, work):
    """`relais-bench sink` on a free loopback port; returns (process, "host:port")."""
    out = open(os.path.join(work, "sink.out"), "w+")
    sink = subprocess.Popen([bench, "sink", "--listen", "127.0.0.1:0"], stdout=out,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out.seek(0)
        m = re.search(r"listening on (\S+)", out.read())
        if m:
            return sink, m.group(1)
        time.sleep(0.05)
    stop_all([sink])
    raise RuntimeError("relais-bench sink did not say where it listens")


def smtp_source_command(args, port, reuse=False):
    cmd = [SMTP_SOURCE, "-m", str(args.messages), "-s", str(args.sessions), "-l", str(args.size),
           "-f", "bench@sender.test", "-t", "sink@example.com"]
    if reuse:
        cmd.append("-d")  # Keep each session open for the next message.
    cmd.append(f"127.0.0.1:{port}")
    return cmd


def machine_cpu_seconds():
    """User + system CPU seconds of the whole machine so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / ticks


def require_postfix_tools():
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not os.path.exists(tool):
            raise SystemExit(f"{tool} is missing: run bench/setup-postfix-tools.sh")


def run(cmd, timeout=900):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr.strip()}")
    return out


def process_tree_cpu_seconds(root_pid):
    """CPU seconds (user + system) of `root_pid` and every live descendant, each including the
    children it already reaped (cutime/cstime), read from /proc. For servers like Postfix whose
    master forks and reaps worker processes all the time."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent, times = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # Gone meanwhile.
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime

    def in_tree(pid):
        while pid > 1:
            if pid == root_pid:
                return True
            pid = parent.get(pid, 0)
        return False
    return sum(t for pid, t in times.items() if in_tree(pid)) / ticks


def write_relay_config(work, port, next_hop, metrics_port=None, spool="spool", extra=""):
    """Writes <work>/relais.toml for a relaisd on 127.0.0.1:`port` (spool <work>/`spool`, admin
    socket, metrics on `metrics_port` or none, no per-client cap to speak of, an acknowledged
    open relay) that routes every domain to the smarthost `next_hop` ("host:port"), with
    `extra` TOML tables added; returns its path."""
    config = os.path.join(work, "relais.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = ["127.0.0.1:{port}"]\nadmin_socket = "{work}/relaisd.sock"\n'
                f'[spool]\npath = "{work}/{spool}"\n'
                f'[metrics]\nlisten = "{f"127.0.0.1:{metrics_port}" if metrics_port else ""}"\n'
                '[limits]\nconnections_per_ip_max = 100000\n'
                # Every domain taken from anyone and sent on: an open relay on loopback, on
                # purpose. Its clients stay untrusted, so that auth_cost's checks apply to them.
                '[relay]\nlocal_domains = ["*"]\nopen_relay_acknowledged = true\n'
                f'{extra}\n'
                f'[[routes]]\ndomain = "*"\ntype = "smarthost"\nhosts = ["{next_hop}"]\n')
    return config


@contextlib.contextmanager
def relaisd(path, threads, next_hop, metrics_port=None, extra=""):
    """A relaisd of its own (spool, admin socket, metrics on `metrics_port` or none) that routes
    every domain to the smarthost `next_hop` ("host:port"), with `extra` TOML tables added.
    Yields (process, SMTP port, work directory); kills it and removes the directory afterwards
    if the caller did not stop it."""
    work = tempfile.mkdtemp(prefix="relais-bench-")
    port = free_port()
    config = write_relay_config(work, port, next_hop, metrics_port, extra=extra)
    cmd = [path, "--config", config]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield proc, port, work
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def memory_kib(pid):
    """Resident memory of `pid` in KiB: {"VmRSS", "RssAnon", "RssFile", "RssShmem", "LazyFree"}.
    RssAnon is the heap and stacks; RssFile is mapped files, i.e. mostly code paged in as it
    first runs; LazyFree is memory the allocator gave back with MADV_FREE, which the kernel
    counts in RSS until it needs the pages."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                fields[name] = int(value.split()[0])
    if "VmRSS" not in fields:
        raise RuntimeError(f"no VmRSS for {pid}")
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("LazyFree:"):
                fields["LazyFree"] = int(line.split()[1])
    return fields


def rss_kib(pid):
    """Resident set size of `pid` in KiB (VmRSS)."""
    return memory_kib(pid)["VmRSS"]


def scrape_gauges(port, names):
    """Each metric in `names`, summed over its label sets, from relaisd's /metrics on `port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        m = re.match(r"([a-z_]+)(?:\{[^}]*\})? (\S+)$", line)
        if m and m.group(1) in totals:
            totals[m.group(1)] += float(m.group(2))
    return totals


class Sink:
    """smtp-sink that counts messages (-c prints running counters)."""

    def __init__(self):
        self.port = free_port()
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-c", f"127.0.0.1:{self.port}",
                                      "1024"], stdout=self.out, stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.proc)

    def count(self):
        self.out.seek(max(0, os.fstat(self.out.fileno()).st_size - 200))
        tail = self.out.read().decode(errors="replace")
        found = re.findall(r"mesg=(\d+)", tail)
        return int(found[-1]) if found else 0

    def close(self):
        stop(self.proc)
        self.out.close()
