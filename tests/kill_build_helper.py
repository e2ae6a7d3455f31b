"""Start an LMDB build in a subprocess and SIGKILL it once its unfinished build has committed enough samples."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

import lmdb

from lightface.data.lmdb_format import PROGRESS_KEY, release_readonly

ROOT = Path(__file__).resolve().parents[1]


def kill_build_after(args: Sequence[str], partial: Path, samples: int, timeout: float = 300.0) -> int:
    """Run ``args`` (a build command) from the repository root, SIGKILL it when ``partial`` (the ``<out>.partial``
    LMDB) records at least ``samples`` done, and return that count. Fails when the build ends first."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([str(a) for a in args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    done, deadline = 0, time.time() + timeout
    # this process's shared read handles of earlier tests' datasets, deleted since, still claim their lock files'
    # inodes in py-lmdb's "already open" guard; a new build's files may reuse one (seen in CI)
    release_readonly()
    while time.time() < deadline and proc.poll() is None:
        if (partial / "data.mdb").exists():
            penv = lmdb.open(str(partial), readonly=True, lock=False, subdir=True)
            with penv.begin() as txn:
                raw = txn.get(PROGRESS_KEY)
            penv.close()
            done = json.loads(raw)["next"] if raw else 0
            if done >= samples:
                break  # at once: a small build finishes within the next poll
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return done
