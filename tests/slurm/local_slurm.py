"""A single-node Slurm cluster with accounting, started from Debian's packages (slurm-wlm, munge, slurmdbd,
mariadb-server) for the launcher tests, and stopped again: everything in one temporary folder, free ports, every
external command under a timeout, and only the processes started here stopped, by PID.

    MariaDB (its own datadir and socket) <- slurmdbd (accounting, so that sacct works: submitit reads job states
    with sacct) <- slurmctld -D  <- slurmd -D (this host as the one node, in partition `debug`)

munged is used as found when `munge -n | unmunge` works; otherwise it is started here (as the munge user, with a key
made if none exists) and stopped at the end. Slurm's commands reach this cluster through SLURM_CONF (`env`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "sacctmgr", "mariadbd", "mariadb-install-db", "munged", "munge")
MUNGE_KEY = Path("/etc/munge/munge.key")


class SlurmUnavailable(Exception):
    """Why the local Slurm cannot run here (the tests skip with it)."""


def why_unavailable() -> str | None:
    if shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists():
        return "slurmctld is not installed (Debian: apt-get install slurm-wlm munge slurmdbd mariadb-server)"
    missing = [name for name in DAEMONS if _which(name) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (Debian: slurm-wlm munge slurmdbd mariadb-server)"
    if os.geteuid() != 0:
        return "the local Slurm needs root (slurmd runs the jobs)"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(Path(folder) / name) for folder in ("/usr/sbin", "/usr/bin")
                                       if (Path(folder) / name).exists()), None)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LocalSlurm:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.node = socket.gethostname().split(".")[0]
        self.processes: list[tuple[str, subprocess.Popen]] = []  # started here, in order

    # -- running commands -----------------------------------------------------------------------------------------
    def run(self, *command: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([_which(command[0]) or command[0], *command[1:]], capture_output=True, text=True,
                                env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def _start(self, name: str, command: list[str], **kwargs) -> subprocess.Popen:
        log = open(self.folder / "log" / f"{name}.out", "w")
        process = subprocess.Popen([_which(command[0]) or command[0], *command[1:]], env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, **kwargs)
        log.close()
        self.processes.append((name, process))
        return process

    def _wait(self, what: str, ready, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, process in self.processes:
                if process.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited ({process.returncode}) while waiting for {what}: "
                                           f"{self._tail(name)}")
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.25)

    def _tail(self, name: str) -> str:
        lines = []
        for path in (self.folder / "log" / f"{name}.out", self.folder / "log" / f"{name}.log"):
            if path.exists():
                lines += path.read_text(errors="replace").strip().splitlines()[-3:]
        return " | ".join(lines)

    # -- the cluster ----------------------------------------------------------------------------------------------
    def start(self) -> "LocalSlurm":
        for sub in ("log", "state", "spool", "db"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._munge()
        mysql_port, dbd_port, ctld_port, slurmd_port = _free_ports(4)
        self._mariadb(mysql_port)
        self._write_configs(mysql_port, dbd_port, ctld_port, slurmd_port)
        self._start("slurmdbd", ["slurmdbd", "-D"])
        self._wait("slurmdbd to listen", lambda: _listening(dbd_port))
        # the cluster must exist in the accounting database before slurmctld registers with it
        self.run("sacctmgr", "-i", "add", "cluster", "cadbench", timeout=60)
        self._start("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait("slurmctld to listen", lambda: _listening(ctld_port))
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait("the node to be idle", self._node_idle, timeout=90)
        return self

    def _node_idle(self) -> bool:
        result = self.run("sinfo", "--noheader", "--Node", "--format=%T", timeout=20, check=False)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _munge(self) -> None:
        if self._munge_works():
            return
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            MUNGE_KEY.write_bytes(os.urandom(1024))
            munge_user = pwd.getpwnam("munge")
            os.chown(MUNGE_KEY, munge_user.pw_uid, munge_user.pw_gid)
            MUNGE_KEY.chmod(0o400)
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        munge_user = pwd.getpwnam("munge")
        os.chown(run_dir, munge_user.pw_uid, munge_user.pw_gid)
        self._start("munged", ["munged", "--foreground"], user="munge", group="munge")
        self._wait("munged", self._munge_works, timeout=30)

    def _munge_works(self) -> bool:
        try:
            credential = subprocess.run([_which("munge"), "-n"], capture_output=True, timeout=10)
            if credential.returncode != 0:
                return False
            return subprocess.run([_which("unmunge")], input=credential.stdout, capture_output=True,
                                  timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _mariadb(self, port: int) -> None:
        data, sock = self.folder / "db", self.folder / "mysql.sock"
        self.run("mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={data}",
                 "--auth-root-authentication-method=normal", "--skip-test-db", timeout=180)
        self._start("mariadbd", ["mariadbd", "--no-defaults", "--user=root", f"--datadir={data}", f"--socket={sock}",
                                 f"--port={port}", "--bind-address=127.0.0.1",
                                 f"--pid-file={self.folder / 'mysql.pid'}", "--skip-log-bin",
                                 "--innodb-buffer-pool-size=64M"])
        self._wait("MariaDB", lambda: sock.exists() and _listening(port))
        self.run("mysql", "--no-defaults", "-uroot", f"--socket={sock}", "-e",
                 "CREATE DATABASE slurm_acct_db; CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
                 "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;", timeout=60)

    def _write_configs(self, mysql_port: int, dbd_port: int, ctld_port: int, slurmd_port: int) -> None:
        folder, cpus = self.folder, os.cpu_count() or 1
        memory_mb = int(int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                                 if line.startswith("MemTotal:"))) / 1024 * 0.8)
        self.conf.write_text("\n".join([
            "ClusterName=cadbench", f"SlurmctldHost={self.node}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "SchedulerType=sched/backfill",
            f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
            f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}", "ReturnToService=2", "MpiDefault=none",
            "JobCompType=jobcomp/none", "MailProg=/bin/true", "KillWait=5",
            "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
            f"AccountingStoragePort={dbd_port}", "JobAcctGatherType=jobacct_gather/none",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP", ""]))
        dbd = folder / "slurmdbd.conf"  # slurmdbd reads it from SLURM_CONF's folder
        dbd.write_text("\n".join([
            "AuthType=auth/munge", "DbdHost=localhost", f"DbdPort={dbd_port}", "SlurmUser=root",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={mysql_port}",
            "StorageUser=slurm", "StoragePass=slurm", "StorageLoc=slurm_acct_db",
            f"PidFile={folder / 'slurmdbd.pid'}", f"LogFile={folder / 'log' / 'slurmdbd.log'}", ""]))
        dbd.chmod(0o600)

    def stop(self) -> None:
        """Cancel what is left of the jobs, then stop the processes started here, newest first, by PID."""
        if any(name == "slurmctld" and process.poll() is None for name, process in self.processes):
            try:
                self.run("scancel", "--full", "--user=root", timeout=20, check=False)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and self.run(
                        "squeue", "--noheader", timeout=20, check=False).stdout.strip():
                    time.sleep(0.5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=20)
        self.processes.clear()
