"""Run a training command in its own process group and SIGTERM the whole group once it has trained
some steps: what a scheduler's preemption or `timeout` does (the trainer and its DataLoader workers
get the signal)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence, Tuple

from lightface.engine.logger import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def logged_steps(metrics: Path) -> int:
    """Training steps logged so far in a run's metrics.jsonl (0 before it exists)."""
    return sum("loss" in r for r in read_metrics(metrics)) if metrics.is_file() else 0


def sigterm_after(args: Sequence, metrics: Path, steps: int, timeout: float = 180.0) -> Tuple[int, str]:
    """``python ARGS`` from the repository root; SIGTERM to its group once ``metrics`` logs ``steps``
    training steps. Returns (exit status, combined output)."""
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while logged_steps(metrics) < steps:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        log, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, log
