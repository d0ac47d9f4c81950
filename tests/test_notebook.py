"""scripts/inference_notebook.ipynb: valid nbformat 4, and its code cells run top to bottom (in
one namespace, in a fresh process, headless) on a tiny checkpoint.

The whole bring-your-own-data flow runs here: fake .npz/.hdf5 episodes from
data/make_example_episodes.py are converted to RLDS, their suggested `DatasetSpec` is written to
JSON, statistics come from the library pipeline, and a tiny model with those statistics is saved
with `save_pretrained` (the checkpoint layout training writes too). Training is skipped: a
2-step `train.main` costs about a minute on the 2-core machine, while the notebook only needs a
loadable checkpoint of the right shapes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from octo_like.data.config import DataConfig, DatasetSource, FrameTransformConfig
from octo_like.data.frame_transforms import CameraTransform
from octo_like.data.oxe.spec import DatasetSpec
from octo_like.data.prepare import prepare_dataset
from octo_like.data.raw_episodes import convert_episodes, suggest_dataset_spec_for
from octo_like.model.config import (
    HeadConfig,
    ImageTokenizerConfig,
    LanguageConfig,
    ModelConfig,
    ProprioTokenizerConfig,
)
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.octo_model import OctoModel, action_statistics_entry
from octo_like.model.testing import host_initialized_model
from tests.xla_flags import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "scripts" / "inference_notebook.ipynb"
WINDOW, HORIZON, PRIMARY, WRIST = 2, 4, 32, 16
STATE_DIM, ACTION_DIM = 6, 7  # what make_example_episodes.py writes

# Executes the notebook's code cells like a kernel would: in order, sharing one namespace.
RUNNER = """
import json, sys
notebook = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for index, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), f"<cell {index}>", "exec"), namespace)
"""


def test_notebook_is_valid_nbformat_4_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["kernelspec"]["language"] == "python"
    kinds = [cell["cell_type"] for cell in notebook["cells"]]
    assert set(kinds) == {"markdown", "code"} and kinds.count("code") >= 5
    for cell in notebook["cells"]:
        assert isinstance(cell["source"], list) and cell["metadata"] == {}
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
            compile("".join(cell["source"]), "<cell>", "exec")  # no IPython magics
    settings = "".join(notebook["cells"][1]["source"])
    for variable in ("OCTO_CHECKPOINT", "OCTO_DATA_DIR", "OCTO_DATASET", "OCTO_PLOT"):
        assert variable in settings
    assert "runs/laptop" in settings and "config.json" in settings  # make train's run
    assert "setup.py" in settings and "JPY_SESSION_NAME" in settings  # finds the repository
    intro = "".join(notebook["cells"][0]["source"])
    assert "MetaWorld" in intro and "synthetic" not in intro  # the data `make train` trains on
    assert '".[notebook]"' in intro


def test_notebook_extra_installs_jupyter_with_locked_pins():
    """`pip install -e ".[notebook]"` pulls Jupyter; its pins are in requirements.lock."""
    match = re.search(r'"notebook": \[([^\]]*)\]', (REPO / "setup.py").read_text())
    assert match, "setup.py has no `notebook` extra"
    pins = re.findall(r'"([\w.-]+)==([\w.]+)"', match.group(1))
    assert {name for name, _ in pins} >= {"notebook", "ipykernel"}
    lock = set((REPO / "requirements.lock").read_text().split())
    for name, version in pins:
        assert f"{name}=={version}" in lock, name


def _example_episodes_module():
    spec = importlib.util.spec_from_file_location(
        "make_example_episodes", REPO / "data" / "make_example_episodes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_config(language_dir: str) -> ModelConfig:
    return ModelConfig(
        transformer="dummy",
        image_tokenizers=(
            ImageTokenizerConfig("primary", num_features=16),
            ImageTokenizerConfig("wrist", encoder="patch16", num_features=16),
        ),
        proprio=ProprioTokenizerConfig(num_features=8),
        language=LanguageConfig(encoder="small", checkpoint_dir=language_dir, small_width=16),
        window=WINDOW,
        action_horizon=HORIZON,
        action_dim=ACTION_DIM,
        head=HeadConfig("diffusion", {"hidden_dim": 16, "num_blocks": 1, "diffusion_steps": 3}),
    )


def _example_batch() -> dict:
    ones = lambda *shape: np.ones(shape, bool)  # noqa: E731
    return {
        "observation": {
            "image_primary": np.zeros((1, WINDOW, PRIMARY, PRIMARY, 3), np.uint8),
            "image_wrist": np.zeros((1, WINDOW, WRIST, WRIST, 3), np.uint8),
            "proprio": np.zeros((1, WINDOW, STATE_DIM), np.float32),
            "proprio_pad_mask": ones(1, WINDOW, STATE_DIM),
            "timestep_pad_mask": ones(1, WINDOW),
            "pad_mask_dict": {k: ones(1, WINDOW) for k in ("image_primary", "image_wrist")}
            | {"proprio": ones(1, WINDOW)},
        },
        "task": {
            "language_instruction": np.array([b"open the drawer"], dtype=object),
            "pad_mask_dict": {"language_instruction": ones(1)},
        },
    }


def _tiny_model(config: ModelConfig, statistics: dict[str, dict]) -> OctoModel:
    """Small random weights drawn on the host (no per-initializer compilation)."""
    return host_initialized_model(config, _example_batch(), statistics)


@pytest.fixture(scope="module")
def converted_run(tmp_path_factory) -> dict[str, str]:
    """Example episodes converted to ``<root>/tfds/my_robot``, its spec JSON and a checkpoint."""
    root = tmp_path_factory.mktemp("notebook")
    examples = _example_episodes_module()
    examples.write_example_episodes(str(root / "episodes"), num_npz=2, num_hdf5=2, length=(8, 12))
    data_root = str(root / "tfds")
    path = convert_episodes(str(root / "episodes"), data_root, "my_robot", val_fraction=0.25)
    spec_file = root / "my_robot_spec.json"
    spec_file.write_text(json.dumps(suggest_dataset_spec_for(path)))
    spec = DatasetSpec.from_dict(json.loads(spec_file.read_text()))
    assert spec.proprio_key == "state" and spec.cameras == ("primary", "wrist")
    cameras = {
        "primary": CameraTransform((PRIMARY, PRIMARY)),
        "wrist": CameraTransform((WRIST,) * 2),
    }
    data_config = DataConfig(
        datasets=(DatasetSource("my_robot", data_root),),
        frame=FrameTransformConfig(cameras=cameras),
        statistics_cache_dir=str(root / "stats"),
        extra_specs={"my_robot": spec},
    )
    stats = prepare_dataset(data_config.datasets[0], data_config).statistics
    entry = action_statistics_entry(stats.to_dict(), "normal", spec.action_normalization_mask)
    model = _tiny_model(
        _model_config(write_tiny_t5_checkpoint(str(root / "t5"))), {"my_robot": entry}
    )
    model.save_pretrained(2, str(root / "checkpoints"))
    return {
        "OCTO_CHECKPOINT": str(root / "checkpoints"),
        "OCTO_DATA_DIR": data_root,
        "OCTO_DATASET": "my_robot",
        "OCTO_DATASET_SPEC": str(spec_file),
    }


def test_notebook_runs_headless_on_a_tiny_checkpoint(converted_run, tmp_path):
    plot = tmp_path / "plot.png"
    env = {
        **os.environ,
        **converted_run,
        "OCTO_PLOT": str(plot),
        "MPLBACKEND": "Agg",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags(),
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(NOTEBOOK)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    assert "action head: diffusion" in out and "my_robot" in out  # the pretty spec
    recorded = re.search(r"recorded actions \[T, A\]: \((\d+), 7\)", out)
    assert recorded, out
    length = int(recorded.group(1))
    assert 8 <= length <= 12
    # Recorded 64x64 / 32x32 frames, resized to the model's 32x32 / 16x16; window 2, chunk 4.
    assert f"observation image_primary [T, W, h, w, 3]: ({length}, 2, 32, 32, 3)" in out
    assert f"observation image_wrist [T, W, h, w, 3]: ({length}, 2, 16, 16, 3)" in out
    assert f"predicted action chunks [T, H, A]: ({length}, 4, 7)" in out
    errors = out.split("mean absolute error per action dim:")[1].splitlines()[0]
    assert "nan" not in errors and len(errors.strip("[] ").split()) == 7
    with Image.open(plot) as image:
        width, height = image.size
        assert width > 300 and height > 300
        assert len(image.convert("L").getcolors(maxcolors=100_000)) > 10  # not a blank canvas
