"""Run ``torchrun`` from a test, isolated from the pytest process and from other runs.

A torchrun test shares the machine with the rest of the suite (and, on a developer
machine or a CI runner, with other sessions). The launch therefore:

* uses ``--standalone``: a free rendezvous port and a unique run id, instead of a fixed
  ``--master_port`` that any other torchrun on the machine can hold or connect to;
* gives the workers a clean environment: no launcher or thread-pool variables inherited
  from the pytest process, whose ``os.environ`` depends on what earlier tests imported
  (sklearn sets ``KMP_*``, OpenCV prepends to ``LD_LIBRARY_PATH`` with an empty entry,
  i.e. the current directory; inductor sets its cache dir), so that a test behaves the
  same alone and in the full suite; one OpenMP thread per worker (2 workers on 2 cores);
  its own ``TMPDIR``;
* on a timeout stops the agent *and* its workers: torchrun starts each worker in its own
  session, so ``subprocess.run(timeout=...)``, which kills only the agent, leaves them
  running (and competing for the CPU with the rest of the suite);
* keeps each worker's stdout/stderr in ``--log-dir`` files, with ``PYTHONFAULTHANDLER``
  and C++ stack traces on, and puts them in the failure message: torchrun's own stderr
  ends with a summary that names only an exit code (e.g. ``-6``), not the cause.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

ROOT = Path(__file__).resolve().parents[1]

_DROP = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
         "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE"}
_DROP_PREFIXES = ("TORCHELASTIC_", "MASTER_", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "TORCHINDUCTOR_")


def torchrun_env(tmp_path: Path) -> dict:
    """The workers' environment: this one without launcher/thread variables, plus fixed settings."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP and not k.startswith(_DROP_PREFIXES)}
    # An empty LD_LIBRARY_PATH entry means "the current directory" to the dynamic loader.
    paths = [p for p in env.pop("LD_LIBRARY_PATH", "").split(os.pathsep) if p and os.path.isdir(p)]
    if paths:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(paths)
    tmp = tmp_path / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), TMPDIR=str(tmp),
        PYTHONFAULTHANDLER="1", TORCH_SHOW_CPP_STACKTRACES="1", NO_ALBUMENTATIONS_UPDATE="1",
    )
    return env


def _worker_logs(folder: Path, lines: int = 60) -> str:
    parts = []
    for path in sorted(folder.rglob("*.log")):
        text = path.read_text(errors="replace").splitlines()
        if text:
            parts.append(f"--- {path.relative_to(folder)} (last {min(lines, len(text))} lines)\n"
                         + "\n".join(text[-lines:]))
    return "\n".join(parts) or f"(no worker logs under {folder})"


def _children(pid: int) -> List[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _stop(proc: subprocess.Popen):
    """SIGTERM the agent (it stops its workers), then SIGKILL whatever is left."""
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    for pid in set(workers + _children(proc.pid)) | {proc.pid}:
        try:
            os.killpg(pid, signal.SIGKILL)  # each worker leads its own session
        except (ProcessLookupError, PermissionError):
            pass
    return proc.communicate()


def start_torchrun(args: Sequence[str], tmp_path: Path, nproc: int = 2) -> subprocess.Popen:
    """Start ``python -m torch.distributed.run --standalone --nproc_per_node N ARGS`` from the repo root,
    its workers logging to ``tmp_path/torchrun_logs``; returns the launcher's process."""
    cmd: List[str] = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                      "--log-dir", str(log_dir(tmp_path)), "--redirects", "3", *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, env=torchrun_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def log_dir(tmp_path: Path) -> Path:
    """Where :func:`start_torchrun` keeps the workers' logs."""
    return tmp_path / "torchrun_logs"


def finish(proc: subprocess.Popen, tmp_path: Path, timeout: float = 900, ok_codes: Sequence[int] = (0,)):
    """Wait for a :func:`start_torchrun` launcher; returns ``(stdout, stderr, worker logs)``. Raises
    ``AssertionError`` with every worker's log when it exits with a status outside ``ok_codes`` or
    does not finish within ``timeout`` seconds (then the agent and its workers are all killed)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        failure = f"torchrun exited with {proc.returncode}" if proc.returncode not in ok_codes else None
    except subprocess.TimeoutExpired:
        stdout, stderr = _stop(proc)
        failure = f"torchrun did not finish within {timeout:.0f} s (stopped)"
    logs = _worker_logs(log_dir(tmp_path))
    if failure:
        raise AssertionError(f"{failure}\n{logs}\n--- torchrun stderr (end)\n{stderr[-3000:]}")
    return stdout, stderr, logs


def run_torchrun(args: Sequence[str], tmp_path: Path, nproc: int = 2, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node N ARGS`` from the repo root, to the end.

    Returns the completed process; raises ``AssertionError`` with every worker's log when it
    fails or does not finish within ``timeout`` seconds (see :func:`finish`).
    """
    proc = start_torchrun(args, tmp_path, nproc)
    stdout, stderr, _ = finish(proc, tmp_path, timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
