"""The commands the README and docs/ show are ones our CLIs accept: every ``--flag`` of a
documented ``python -m pipelines.X`` / ``benchmarks.X`` line is in that module's ``--help``.

A renamed or removed flag otherwise leaves the docs telling users a command that fails.
Flags after a bare ``--`` belong to the trainer the module's help names ("after --: the
flags of python -m pipelines.Y") and are checked against that trainer.
"""
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python3? -m ((?:pipelines|benchmarks)\.\w+)([^`|#;&\n]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")
PASS_THROUGH = re.compile(r"after --: the flags of\s+python -m\s+([\w.]+)")


def _documents():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_flags() -> Dict[Tuple[str, bool], Dict[str, Set[str]]]:
    """``{(module, after_dashes): {flag: {document names}}}``: ``after_dashes`` marks the flags
    written after a bare ``--``, which the module hands on to another trainer."""
    found: Dict[Tuple[str, bool], Dict[str, Set[str]]] = {}
    for doc in _documents():
        text = doc.read_text(encoding="utf-8").replace("\\\n", " ")  # shell continuation lines
        for match in COMMAND.finditer(text):
            module, args = match.group(1), match.group(2)
            own, _, tail = args.partition(" -- ")
            for key, part in (((module, False), own), ((module, True), tail)):
                for flag in FLAG.findall(part):
                    found.setdefault(key, {}).setdefault(flag, set()).add(doc.name)
    return found


@lru_cache(maxsize=None)
def help_text(module: str) -> str:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"python -m {module} --help failed:\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_every_documented_flag_is_one_the_cli_accepts():
    found = documented_flags()
    # the scan reads the docs
    assert ("pipelines.train_lightcnn", False) in found and ("pipelines.super_resolve", False) in found
    missing = []
    for (module, after_dashes), flags in sorted(found.items()):
        if after_dashes:  # the flags after --: those of the trainer this module hands them to
            trainer = PASS_THROUGH.search(" ".join(help_text(module).split()))
            assert trainer, f"docs pass flags after -- to python -m {module}, whose --help names no trainer for them"
            module = trainer.group(1)
        usage = help_text(module)
        missing += [f"python -m {module} {flag} (in {', '.join(sorted(docs))})"
                    for flag, docs in sorted(flags.items()) if not re.search(rf"(?<![\w-]){flag}(?![\w-])", usage)]
    assert not missing, "documented flags the CLI does not have:\n" + "\n".join(missing)
