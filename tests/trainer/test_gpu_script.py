"""The prepared GPU benchmark runs end to end on a CPU with the tiny towers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_train_script_runs_tiny_on_cpu(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_train.sh"), str(tmp_path)], cwd=ROOT,
                          env={**os.environ, "TINY": "1", "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "tiny.json").read_text().strip().splitlines()[-1])
    assert result["samples_per_s"] > 0 and result["tflops_per_step"] > 0
