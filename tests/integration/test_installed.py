"""A non-editable install (a built wheel) finds its configs and experiments from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_install_runs_from_any_directory(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("nnrun-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert (site / "nnrun/configs/experiment/patching.yaml").is_file()
    assert (site / "nnrun/configs/model/tiny_gpt2.yaml").is_file()
    assert (site / "nnrun/assets/demo/model.safetensors").is_file()
    assert (site / "nnrun/assets/demo/MODEL_CARD.md").is_file()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-c", "import nnrun; print(nnrun.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout
    # the shipped experiment and dataset on the shipped demo model (8 of its 128 examples)
    proc = subprocess.run([sys.executable, "-m", "nnrun", "experiment=patching", "++data.limit=8",
                           f"hydra.run.dir={tmp_path / 'run'}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "COMPLETED").is_file()  # the demo model ships in the wheel
