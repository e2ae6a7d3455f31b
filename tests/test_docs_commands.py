"""The commands the README and docs/ show are ones our CLIs accept: every ``--flag`` of a
documented ``python -m pipelines.X`` / ``benchmarks.X`` line is in that module's ``--help``.

A renamed or removed flag otherwise leaves the docs telling users a command that fails.
Flags after a bare ``--`` belong to the trainer the module's help names ("after --: the
flags of python -m pipelines.Y") and are checked against that trainer.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, Set, Tuple

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


# One interpreter prints every --help (torch is imported once, not once per module).
_PRINT_HELPS = """
import contextlib, io, json, runpy, sys
out_path, modules, helps = sys.argv[1], sys.argv[2:], {}
for module in modules:
    sys.argv, text = [module, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = "returned without exiting"
    except SystemExit as stop:
        code = stop.code or 0
    helps[module] = [code, text.getvalue()]
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(helps, f)
"""


def help_texts(modules: Iterable[str], scratch: Path) -> Dict[str, str]:
    """``{module: the text of python -m module --help}``, printed by one fresh interpreter."""
    modules = sorted(set(modules))
    out = scratch / "helps.json"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    done = subprocess.run([sys.executable, "-c", _PRINT_HELPS, str(out), *modules], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"printing the --help of {modules} failed:\n{done.stderr[-2000:]}"
    helps = json.loads(out.read_text(encoding="utf-8"))
    failed = [f"python -m {m} --help: {code}" for m, (code, _) in helps.items() if code != 0]
    assert not failed, "\n".join(failed)
    return {m: text for m, (_, text) in helps.items()}


@pytest.mark.slow
def test_every_documented_flag_is_one_the_cli_accepts(tmp_path):
    found = documented_flags()
    # the scan reads the docs
    assert ("pipelines.train_lightcnn", False) in found and ("pipelines.super_resolve", False) in found
    helps = help_texts((module for module, _ in found), tmp_path)
    missing = []
    for (module, after_dashes), flags in sorted(found.items()):
        if after_dashes:  # the flags after --: those of the trainer this module hands them to
            trainer = PASS_THROUGH.search(" ".join(helps[module].split()))
            assert trainer, f"docs pass flags after -- to python -m {module}, whose --help names no trainer for them"
            module = trainer.group(1)
            if module not in helps:
                helps.update(help_texts([module], tmp_path))
        usage = helps[module]
        missing += [f"python -m {module} {flag} (in {', '.join(sorted(docs))})"
                    for flag, docs in sorted(flags.items()) if not re.search(rf"(?<![\w-]){flag}(?![\w-])", usage)]
    assert not missing, "documented flags the CLI does not have:\n" + "\n".join(missing)
