"""A real single-node Slurm cluster on localhost, for the tests (and by hand).

munged, mariadbd, slurmdbd, slurmctld and slurmd run as background processes with their
config, state, sockets and logs in one folder; accounting is on (slurmdbd on MariaDB), so
`sacct` works as on a real cluster. Their PIDs are recorded in `<folder>/pids.json` and each is
ended by its PID. `start()` is idempotent: a folder whose cluster is up is reused. Clients find
the cluster through `SLURM_CONF` (`Cluster.env`).

    python tests/slurm_cluster.py start /tmp/slurm     # prints the SLURM_CONF to export
    python tests/slurm_cluster.py stop /tmp/slurm

Packages (Debian/Ubuntu): `apt-get install -y slurm-wlm munge slurmdbd mariadb-server`.
Daemons run as root (SlurmUser=root), which needs a root shell, as in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sacctmgr", "srun")
CLUSTER_NAME = "odecli"
PARTITION = "debug"
KILL_WAIT = 30  # seconds between SIGTERM and SIGKILL (Slurm's default)
SLOTS = 8  # CPUs the node offers (more than the machine has: test jobs are tiny)
SHORT = "short"  # a partition whose time limit is one minute
USER = "odecli-ci"  # the non-root user the tests submit as


@dataclass
class Cluster:
    folder: Path
    pids: dict[str, int] = field(default_factory=dict)
    cpus: int = 1
    memory_mb: int = 1024

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}


def missing() -> str | None:
    """Why no cluster can start here (a missing program, not root), or None."""
    if sys.platform != "linux":
        return "Slurm tests need Linux"
    if os.geteuid() != 0:
        return "the test cluster's daemons need root"
    gone = [p for p in (*DAEMONS, *CLIENTS, "mariadb-install-db", "mariadb")
            if not _which(p)]
    if gone:
        return (f"Slurm is not installed ({', '.join(gone)} missing; apt-get install -y "
                f"slurm-wlm munge slurmdbd mariadb-server)")
    return None


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (ended child not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 2048


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def _configs(c: Cluster, ports: dict[str, int]) -> None:
    f = c.folder
    host = socket.gethostname().split(".")[0]
    munge = f"socket={f / 'munge' / 'munge.socket.2'}"
    _write(f / "slurm.conf", f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo={munge}
CredType=cred/munge
StateSaveLocation={f / 'state'}
SlurmdSpoolDir={f / 'spool'}
SlurmctldPidFile={f / 'slurmctld.pid'}
SlurmdPidFile={f / 'slurmd.pid'}
SlurmctldLogFile={f / 'log' / 'slurmctld.log'}
SlurmdLogFile={f / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
AccountingStoragePass={f / 'munge' / 'munge.socket.2'}
KillWait={KILL_WAIT}
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=20
InactiveLimit=0
ReturnToService=2
JobRequeue=1
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={c.cpus} RealMemory={c.memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName={SHORT} Nodes=ALL MaxTime=1 State=UP
""")
    _write(f / "slurmdbd.conf", f"""\
AuthType=auth/munge
AuthInfo={munge}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
PidFile={f / 'slurmdbd.pid'}
LogFile={f / 'log' / 'slurmdbd.log'}
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mariadb']}
StorageUser=root
StorageLoc=slurm_acct_db
""", 0o600)


def _spawn(c: Cluster, name: str, argv: list[str]) -> None:
    log = open(c.folder / "log" / f"{name}.out", "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **c.env})
    log.close()
    c.pids[name] = proc.pid
    (c.folder / "pids.json").write_text(json.dumps(c.pids))


def _wait(what: str, ok, c: Cluster, name: str, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ok():
            return
        if name in c.pids and not _alive(c.pids[name]):
            break
        time.sleep(0.1)
    tail = ""
    for log in sorted((c.folder / "log").glob(f"{name}*")):
        tail += log.read_text(errors="replace")[-1500:]
    raise RuntimeError(f"{what} did not come up: {tail.strip()[-1500:]}")


def _quiet(argv: list[str], c: Cluster, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **c.env})


def running(folder: Path) -> Cluster | None:
    """The cluster in `folder` when every daemon is alive and slurmctld answers."""
    try:
        saved = json.loads((folder / "cluster.json").read_text())
        c = Cluster(folder, **{k: v for k, v in saved.items() if k != "folder"})
    except (OSError, ValueError, TypeError):
        return None
    if set(c.pids) != set(DAEMONS) or not all(_alive(p) for p in c.pids.values()):
        return None
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        if _quiet(["scontrol", "ping"], c).returncode == 0:
            return c
    return None


def start(folder: Path | str) -> Cluster:
    """Start (or reuse) the cluster in `folder`; raises RuntimeError saying why it failed."""
    folder = Path(folder).resolve()
    found = running(folder)
    if found is not None:
        return found
    stop(folder)
    for sub in ("munge", "db", "state", "spool", "log"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / sub).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    (folder / "munge").chmod(0o755)
    c = Cluster(folder, cpus=max(SLOTS, os.cpu_count() or 1),
                memory_mb=max(1024, _memory_mb() - 2048))
    ports = {k: _free_port() for k in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
    _configs(c, ports)
    try:
        _start_daemons(c, ports)
    except BaseException:
        stop(folder)
        raise
    (folder / "cluster.json").write_text(json.dumps(
        {"pids": c.pids, "cpus": c.cpus, "memory_mb": c.memory_mb}))
    return c


def _start_daemons(c: Cluster, ports: dict[str, int]) -> None:
    f = c.folder
    key = f / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = f / "munge" / "munge.socket.2"
    _spawn(c, "munged", [_which("munged"), "-F", "--force", f"--socket={sock}",
                         f"--key-file={key}", f"--pid-file={f / 'munge' / 'munged.pid'}",
                         f"--log-file={f / 'log' / 'munged.log'}",
                         f"--seed-file={f / 'munge' / 'munged.seed'}"])
    _wait("munged", sock.exists, c, "munged", 20)

    db = f / "db"
    init = subprocess.run([_which("mariadb-install-db"), f"--datadir={db}", "--user=root",
                           "--auth-root-authentication-method=normal",
                           "--skip-test-db"], capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {(init.stderr or init.stdout)[-800:]}")
    dbsock = db / "mysql.sock"
    _spawn(c, "mariadbd", [_which("mariadbd"), "--no-defaults", f"--datadir={db}",
                           "--user=root", f"--socket={dbsock}", f"--port={ports['mariadb']}",
                           "--bind-address=127.0.0.1", f"--pid-file={db / 'mariadbd.pid'}",
                           "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
                           "--innodb-log-file-size=16M", "--skip-log-bin"])

    def db_up() -> bool:
        return _quiet(["mariadb", f"--socket={dbsock}", "-uroot", "-e", "SELECT 1"],
                      c).returncode == 0
    _wait("mariadbd", db_up, c, "mariadbd", 60)
    # slurmdbd reaches MariaDB over TCP as root without a password
    grant = ("CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; "
             "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;")
    _quiet(["mariadb", f"--socket={dbsock}", "-uroot", "-e", grant], c)

    _spawn(c, "slurmdbd", [_which("slurmdbd"), "-D"])

    def dbd_up() -> bool:
        return _quiet(["sacctmgr", "-n", "list", "cluster"], c).returncode == 0
    _wait("slurmdbd", dbd_up, c, "slurmdbd", 60)
    _quiet(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME], c)

    _spawn(c, "slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(c.conf)])
    _wait("slurmctld", lambda: _quiet(["scontrol", "ping"], c).returncode == 0, c,
          "slurmctld", 60)
    _spawn(c, "slurmd", [_which("slurmd"), "-D", "-f", str(c.conf)])

    def node_idle() -> bool:
        out = _quiet(["sinfo", "-h", "-o", "%t"], c).stdout.strip()
        return out in ("idle", "mix", "alloc")
    _wait("slurmd", node_idle, c, "slurmd", 60)


def stop(folder: Path | str) -> None:
    """End the daemons recorded in the folder, by PID, last started first."""
    folder = Path(folder)
    try:
        pids = json.loads((folder / "pids.json").read_text())
    except (OSError, ValueError):
        return
    for name in reversed(DAEMONS):
        pid = pids.get(name)
        if pid and _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if pid:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
    with contextlib.suppress(OSError):
        (folder / "pids.json").unlink()
        (folder / "cluster.json").unlink()


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    """The non-root user jobs are submitted as, created when missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name],
                       check=True, capture_output=True)
        return pwd.getpwnam(name)


@contextlib.contextmanager
def reachable_by(user: str, paths: list[Path]):
    """Let `user` reach `paths` (a Python under /root, say): each folder on the way that
    others cannot enter gets an ACL entry for that user alone (setfacl), else o+x, and is
    put back afterwards."""
    undo: list[tuple[Path, int | None]] = []
    try:
        for path in paths:
            for folder in reversed(Path(path).resolve().parents):
                if folder.stat().st_mode & 0o001 or any(f == folder for f, _ in undo):
                    continue
                had_acl = _which("getfacl") and subprocess.run(
                    ["getfacl", "--skip-base", "--absolute-names", str(folder)],
                    capture_output=True, text=True).stdout.strip()
                if _which("setfacl") and subprocess.run(
                        ["setfacl", "-m", f"u:{user}:x", str(folder)],
                        capture_output=True).returncode == 0:
                    undo.append((folder, -1 if had_acl else None))
                else:
                    undo.append((folder, folder.stat().st_mode & 0o7777))
                    folder.chmod(folder.stat().st_mode | 0o001)
        yield
    finally:
        for folder, mode in reversed(undo):
            if mode is None:  # it had no ACL: none again
                subprocess.run(["setfacl", "-b", str(folder)], capture_output=True)
            elif mode == -1:
                subprocess.run(["setfacl", "-x", f"u:{user}", str(folder)], capture_output=True)
            else:
                folder.chmod(mode)


def job_pids(c: Cluster, job_id: str) -> list[int]:
    """PIDs of a running job's task processes (step 0), as `scontrol listpids` tells (it
    takes the raw id of an array task: squeue's %A)."""
    raw = _quiet(["squeue", "--noheader", f"--jobs={job_id}", "--format=%A"], c).stdout.strip()
    out = _quiet(["scontrol", "listpids", raw or job_id], c).stdout
    pids = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "0" and parts[0].isdigit():
            pids.append(int(parts[0]))
    return pids


class QuickRequeue:
    """Slurm keeps a requeued job pending for two minutes (reason BeginTime); a site policy
    the tests need not wait for: this thread starts such jobs at once."""

    def __init__(self, c: Cluster) -> None:
        import threading

        self.cluster, self.stopping = c, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.wait(1.0):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                out = _quiet(["squeue", "--noheader", "--array", "--states=PENDING",
                              "--format=%i|%r"], self.cluster).stdout
                for line in out.splitlines():
                    job, _, reason = line.partition("|")
                    if reason.strip() == "BeginTime":
                        _quiet(["scontrol", "update", f"JobId={job.strip()}",
                                "StartTime=now"], self.cluster)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: python tests/slurm_cluster.py start|stop FOLDER")
    if sys.argv[1] == "stop":
        stop(sys.argv[2])
    else:
        reason = missing()
        if reason:
            sys.exit(reason)
        t0 = time.monotonic()
        cluster = start(sys.argv[2])
        print(f"export SLURM_CONF={cluster.conf}   # up in {time.monotonic() - t0:.1f} s")
