"""Run tests/test_engine.py's toy task (a few milliseconds a step) with the ToyConfig settings given as one JSON
object, for the engine's multi-process tests under torchrun (tests/torchrun_helper.py).

Each rank prints one line ``TOY rank=R {"stopped": ..., "step": ..., "exit": STATUS}`` and exits with STATUS:
0, or 128 + the signal number when a stop signal ended the run (as the trainers' command lines do); a run that
failed prints ``TOY rank=R {"error": MESSAGE, "exit": 1}`` and exits with 1."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightface.engine.engine import Engine, TrainingInterrupted  # noqa: E402
from test_engine import ToyConfig, ToyTask  # noqa: E402


def main(argv) -> int:
    engine = Engine(ToyTask(ToyConfig(**json.loads(argv[0]))))
    status = 0
    try:
        summary = engine.run()
    except TrainingInterrupted as stop:
        summary, status = stop.summary, stop.exit_status
    except Exception as err:  # what this rank stopped with: the same on every rank, or the test says otherwise
        print(f"TOY rank={engine.dist.rank} {json.dumps({'error': str(err), 'exit': 1})}", flush=True)
        return 1
    result = {"stopped": summary["stopped"], "step": summary["step"], "exit": status}
    print(f"TOY rank={engine.dist.rank} {json.dumps(result)}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
