"""A real single-node Slurm for the tests: munged, slurmctld and slurmd from Debian's packages,
started as root without systemd in a private folder, and stopped by pid even when a test fails.

Facts this relies on (Debian 12, Slurm 22.05): munged must run as user `munge` with a key it owns
and a socket folder of mode 0711; the node line must copy `slurmd -C`; `slurmctld -c` starts from
a clean state; `KillWait=2` because submitit ignores SIGTERM; two fake GPUs are `/dev/null`
symlinks in gres.conf, which is enough for Slurm to set CUDA_VISIBLE_DEVICES. There is no
slurmdbd: jobs stay visible to `scontrol show job` for `MinJobAge` seconds, which is how xfer
reads the state of a job that ended without writing its result."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from processes import alive, gone_within

DAEMONS = ("slurmd", "slurmctld", "munged")


def available() -> str | None:
    """None when the Slurm daemons can run here, else why not."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol") if shutil.which(b) is None
               and not Path(f"/usr/sbin/{b}").exists()]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "the daemons must be started as root"
    return None


class Cluster:
    def __init__(self, folder: Path, extra: str = ""):
        self.dir = Path(folder)
        self.extra = extra  # more slurm.conf lines, e.g. "MaxArraySize=4"
        self.conf = self.dir / "slurm.conf"
        # munged runs as user munge, who cannot enter a root-only folder such as pytest's tmp_path
        self.munge = Path(tempfile.mkdtemp(prefix="xfer-munge-"))
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        host = socket.gethostname()
        for sub in ("state", "spool", "gpu"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            link = self.dir / "gpu" / f"nvidia{i}"
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        d = self.dir
        self.conf.write_text(f"""ClusterName=xfer-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge}/munge.socket
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MailProg=/bin/true
KillWait=2
MinJobAge=3600
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
{node} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
{self.extra}
""")
        (self.dir / "gres.conf").write_text(f"NodeName={node.split()[0].split('=')[1]} Name=gpu File={d}/gpu/nvidia[0-1]\n")

    def _start_munge(self) -> None:
        munge = self.munge
        os.chmod(munge, 0o711)
        user = pwd.getpwnam("munge")
        key = munge / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(128))
        for p in (munge, key):
            os.chown(p, user.pw_uid, user.pw_gid)
        os.chmod(key, 0o600)
        subprocess.run(["runuser", "-u", "munge", "--", "munged", f"--socket={munge}/munge.socket",
                        f"--key-file={key}", f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                        f"--seed-file={munge}/munged.seed"], check=True, capture_output=True)

    def start(self, timeout: float = 60) -> "Cluster":
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._start_munge()
        subprocess.run(["slurmctld", "-c", "-f", str(self.conf)], check=True, env=self.env)
        subprocess.run(["slurmd", "-f", str(self.conf)], check=True, env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env).stdout
            if out.strip() == "idle":
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"single-node Slurm did not become idle in {timeout} s; logs in {self.dir}")

    def pids(self) -> dict[str, int]:
        files = {"slurmd": self.dir / "slurmd.pid", "slurmctld": self.dir / "slurmctld.pid",
                 "munged": self.munge / "munged.pid"}
        out = {}
        for name, path in files.items():
            try:
                out[name] = int(path.read_text().strip())
            except (FileNotFoundError, ValueError):
                pass
        return out

    def stop(self, timeout: float = 20) -> None:
        """Cancel every job, then stop every daemon by its pidfile, slurmd first."""
        subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True)
        deadline = time.time() + timeout
        while time.time() < deadline and subprocess.run(["squeue", "-h"], env=self.env, capture_output=True,
                                                         text=True).stdout.strip():
            time.sleep(0.5)
        pids = self.pids()
        for name in DAEMONS:
            if name in pids:
                _kill(pids[name], signal.SIGTERM)
        gone_within(pids.values(), timeout)
        for pid in pids.values():
            _kill(pid, signal.SIGKILL)
        shutil.rmtree(self.munge, ignore_errors=True)


def _kill(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(folder: Path, extra: str = ""):
    """A started cluster (`extra`: more slurm.conf lines), with SLURM_CONF pointing at it, stopped on
    the way out (every daemon gone, even when the test failed)."""
    import pytest

    c = Cluster(folder, extra=extra).start()
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", str(c.conf))
    try:
        yield c
    finally:
        mp.undo()
        c.stop()
        assert not any(alive(p) for p in c.pids().values())
