"""A real Slurm cluster on this machine for the tests: munged, slurmctld and two node daemons
(`slurmd -N n1`, `slurmd -N n2`) with their own slurm.conf, state and logs in a temporary folder.

The node names n1/n2 are not host names (they do not resolve); every node's NodeAddr is 127.0.0.1,
so scripts must use Slurm's node address, as on clusters whose node names are not in DNS. The
daemons run in the foreground as children of the test process and are stopped by their PIDs.
Needs root and Debian's slurm-wlm and munge packages (`.ci/run` installs them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> str | None:
    """Why the cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "the Slurm tests need root"
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol") if not shutil.which(b)]
    return f"Slurm/munge not installed ({', '.join(missing)}): apt-get install slurm-wlm munge" if missing else None


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> "SlurmCluster":
        r = self.root
        for d in ("state", "spool-n1", "spool-n2", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = r / "munge" / "munge.sock"
        host = socket.gethostname()
        ctld_port, node_ports = _free_port(), [_free_port(), _free_port()]
        self.conf.write_text(f"""\
ClusterName=dgentest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool-%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=n1 NodeHostname={host} NodeAddr=127.0.0.1 Port={node_ports[0]} CPUs={os.cpu_count()} State=UNKNOWN
NodeName=n2 NodeHostname={host} NodeAddr=127.0.0.1 Port={node_ports[1]} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")
        self._spawn("munged", ["munged", "-F", "--force", "-S", str(sock), "--key-file", str(key),
                               "--pid-file", str(r / "munge" / "munged.pid"), "--log-file", str(r / "munge.log"),
                               "--seed-file", str(r / "munge" / "seed")])
        self._wait(lambda: sock.exists(), "munged to open its socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run("scontrol", "ping", check=False).returncode == 0, "slurmctld to answer")
        for n in ("n1", "n2"):
            self._spawn(f"slurmd-{n}", ["slurmd", "-D", "-N", n, "-f", str(self.conf)])
        self._wait(self._nodes_idle, "both nodes to be idle")
        return self

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.stdout", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def _wait(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise TimeoutError(f"timed out waiting for {what}:\n{self.logs()}")

    def _nodes_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split()
        return out.count("idle") == 2

    def logs(self) -> str:
        parts = []
        for f in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.stdout")):
            parts.append(f"--- {f.name}\n" + f.read_text()[-2000:])
        return "\n".join(parts)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):  # nodes, then the controller, then munge
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- using it -----------------------------------------------------------------------------------
    def run(self, *cmd, check=True, **kw) -> subprocess.CompletedProcess:
        done = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env={**self.env, **kw.pop("env", {})},
                              timeout=kw.pop("timeout", 60), **kw)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}): {done.stderr}")
        return done

    def sbatch(self, *args, cwd: Path, env: dict | None = None) -> int:
        return int(self.run("sbatch", "--parsable", *args, cwd=cwd, env=env or {}).stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def wait_job(self, job_id: int, states=("COMPLETED",), timeout: float = 300, restarts: int | None = None) -> dict:
        """Wait until the job reaches a final state; returns its scontrol record."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in final and (restarts is None or int(info.get("Restarts", 0)) >= restarts):
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {self.job(job_id).get('JobState')} after {timeout}s\n{self.logs()}")
