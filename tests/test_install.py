"""The base install is the data pipeline alone: no pipeline or schemas module imports the
trainer's packages (torch, open_clip, DeepSpeed, scikit-learn), and a command that needs an
extra that is not installed says which, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ONLY = ("torch", "torchvision", "open_clip", "open_clip_train", "deepspeed", "sklearn", "tensorboard")

# A finder that refuses the trainer's packages, as an environment without them would.
BLOCK = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {TRAIN_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code, *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})


def test_every_pipeline_module_imports_without_the_trainer_packages():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for package in ("pipeline", "schemas", "dags")
                     for p in (ROOT / package).rglob("*.py") if p.name != "__main__.py")
    code = ("import importlib, sys\n"
            "bad = []\n"
            "for m in sys.argv[1:]:\n"
            "    try:\n"
            "        importlib.import_module(m)\n"
            "    except ModuleNotFoundError as e:\n"
            "        if e.name.split('.')[0] != 'airflow':\n"  # the DAG module needs [airflow], not [train]
            "            bad.append(f'{m}: {e.name}')\n"
            "assert not bad, bad\n")
    proc = _python(code, *modules)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(modules) > 30


def test_trainer_commands_without_the_train_extra_say_so_in_one_line(tmp_path):
    for command in (["train", "--data", str(tmp_path)], ["eval", "--model", str(tmp_path), "--dataset", str(tmp_path)],
                    ["export", "--run", str(tmp_path), "--output", str(tmp_path / "x")], ["demo", "--quick"]):
        proc = _python("import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))", *command)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
        assert "'train' extra" in lines[0] and "pip install 'openwit[train]'" in lines[0], lines[0]
