"""The built-in experiments show the known structure on the bundled demo model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nnrun_inprocess import run_nnrun
from safetensors import safe_open

from nnrun.demo import corpus


def tensors_of(run: Path) -> dict:
    tensors = {}
    for path in (run / "tensors").glob("*.safetensors"):
        with safe_open(path, "pt") as f:
            tensors[path.stem] = f.get_tensor(path.stem)
    return tensors


def run_experiment(name: str, tmp_path, *overrides: str) -> dict:
    """`nnrun experiment=NAME model=demo OVERRIDES` (in-process): its saved tensors."""
    run = tmp_path / name
    result = run_nnrun([f"experiment={name}", "model=demo", *overrides], cwd=tmp_path,
                       run_dir=run)
    assert result.code == 0, result.explain()
    return tensors_of(run)


@pytest.fixture(scope="module")
def patching(tmp_path_factory):
    return run_experiment("patching_single",
                          tmp_path_factory.mktemp("demo"))["save_effect"][0]  # (layer, position)


def test_patching_prompts_are_the_demo_constants():
    from omegaconf import OmegaConf

    params = OmegaConf.load(Path(__file__).parents[2] / "experiments/patching_single.yaml").params
    assert (params.clean, params.corrupt, params.answer, params.foil) == (
        corpus.PATCHING_CLEAN, corpus.PATCHING_CORRUPT, corpus.PATCHING_ANSWER,
        corpus.PATCHING_FOIL)


def test_patching_shows_the_known_picture(patching):
    """Subject token in early layers, final token in late layers, nothing before the subject."""
    effect = patching                                     # (layer, position)
    subject = corpus.PATCHING_CLEAN.split().index("eiffel")
    full = effect.abs().max()
    assert full > 1.0
    assert effect[:, :subject].abs().max() < 1e-4         # identical prefix: exactly no effect
    assert effect[0, subject] > 0.8 * full                # early layer: the subject carries it
    assert effect[-1, -1] > 0.8 * full                    # late layer: the final token carries it
    assert effect[0, -1].abs() < 0.2 * full               # ... but not yet in the first layer
    assert effect[-1, subject].abs() < 0.2 * full         # ... and the subject no longer does


def test_dataset_patching_shows_the_picture_on_average(patching_run):
    """Over 128 held-out pairs: per-example effects streamed to disk, the heatmap is their mean,
    and the normalized metric is 1 where the clean run is fully restored."""
    tensors = tensors_of(patching_run[1])   # `experiment=patching model=demo`, conftest.py
    effect = tensors["save_effect"]                       # (example, layer, position)
    assert effect.shape == (128, 4, 9)
    assert torch.allclose(tensors["heatmap"], effect.mean(0), atol=1e-5)
    assert torch.allclose(tensors["heatmap_sem"], effect.std(0) / 128 ** 0.5, atol=1e-5)
    normalized = tensors["save_normalized"]               # (layer, position)
    subject = 2                                           # "the famous <subject> ..."
    assert normalized[0, subject] > 0.9 and normalized[-1, -1] > 0.9
    assert normalized[:, :subject].abs().max() < 1e-3     # identical prefix: no effect
    assert normalized[-1, subject].abs() < 0.1            # late layers: the subject no longer does


def test_logit_lens_rank_improves_with_depth(tmp_path):
    tensors = run_experiment("logit_lens", tmp_path)
    rank = tensors["save_rank"][0]                        # (example, layer) → (layer,)
    assert rank[-1] == 1
    assert rank[0] > rank[-1]
    assert torch.all(rank[1:] <= rank[:-1])               # never gets worse with depth
