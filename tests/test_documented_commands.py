"""Every `python train.py` / `python finetune.py` command printed in the README, a page under
docs/, the data conversion guide (data/README.md) or a config or entry-point docstring is parsed
exactly as written (paths to data that does not exist here swapped for fixtures), validated into
the typed config, and its model built abstractly with `nnx.eval_shape`; the debug command is the
one tests/training/test_train.py trains and resumes. The guide's example config file
(`configs/finetune_my_robot.py`) and spec JSON are written out from the guide itself and used by
the commands that name them. A documented command cannot rot."""

from __future__ import annotations

import json
import pathlib
import shlex

import numpy as np
import pytest
from flax import nnx

import finetune
import train
from octo_like.model.config import ImageTokenizerConfig, LanguageConfig, ModelConfig
from octo_like.model.language.testing import write_tiny_t5_checkpoint
from octo_like.model.language.tokenizer import TextTokenizer
from octo_like.model.octo_model import OctoModel
from octo_like.model.octo_module import OctoModule
from octo_like.training.config import parse_train_config
from octo_like.training.finetuning.finetune_config import parse_finetune_config
from tests.documented import DATA_GUIDE, DOCUMENTS, REPO, documented_commands, fenced_block

SOURCES = (
    *DOCUMENTS, DATA_GUIDE, "configs/pretrain.py", "configs/finetune.py", "train.py",
    "finetune.py",
)  # fmt: skip
# The example config file of the data conversion guide: written from the guide when a command
# names it, with the guide's spec JSON at the path it reads (~/my_robot_spec.json).
GUIDE_CONFIG = "configs/finetune_my_robot.py"
# Octo's published sizes without the frozen T5 (Octo paper): Small 27M, Base 93M.
PUBLISHED_PARAMETERS = {"small": 27e6, "base": 93e6}


def documented_train_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command, continuation lines joined, comments and the
    placeholder ``[--config.KEY=VALUE ...]`` dropped, optional ``[--flag]`` kept."""
    found = []
    for where, match, text in documented_commands(SOURCES, r"python (train|finetune)\.py(?= )"):
        tokens = [t.strip("[]") for t in shlex.split(match.group(1) + ".py" + text)]
        tokens = [t for t in tokens if t and "KEY=VALUE" not in t and t != "..."]
        found.append((where, tokens))
    return found


COMMANDS = documented_train_commands()


def test_the_documents_hold_the_commands_we_expect():
    scanned = {where.split(":")[0] for where, _ in COMMANDS}
    assert {"README.md", "docs/training.md", "docs/finetuning.md", DATA_GUIDE} <= scanned
    programs = [argv[0] for _, argv in COMMANDS]
    assert programs.count("train.py") >= 6 and programs.count("finetune.py") >= 3
    presets = {a.split(":", 1)[1] for _, argv in COMMANDS for a in argv if "pretrain.py:" in a}
    assert {"debug", "laptop", "small,oxe_magic_soup", "base,bridge"} <= presets


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, str]:
    """A T5-base-shaped HF directory (tiny vocabulary) and a `laptop`-shaped pretrained
    checkpoint, for the paths the commands name."""
    root = tmp_path_factory.mktemp("documented")
    t5 = write_tiny_t5_checkpoint(
        str(root / "t5-base"), d_model=768, num_layers=12, num_heads=12, d_kv=64, d_ff=3072,
        feed_forward_proj="relu",
    )  # fmt: skip
    config = ModelConfig(
        transformer="tiny",
        image_tokenizers=(ImageTokenizerConfig("primary", goal_fusion=True),),
        language=LanguageConfig(encoder="small", checkpoint_dir=t5, small_width=64),
        action_dim=4,
    )
    model = OctoModel.from_config(config, example_batch(config, {"primary": (64, 64)}), _key())
    model.save_pretrained(1, str(root / "laptop" / "checkpoints"))
    return {"t5": t5, "pretrained": str(root / "laptop" / "checkpoints")}


def _key():
    import jax

    return jax.random.key(0)


def example_batch(config: ModelConfig, sizes: dict[str, tuple[int, int]], batch: int = 1):
    """A batch of zeros with the cameras, proprio and task inputs `config` reads."""
    w, h = config.window, config.action_horizon
    cameras = [t.camera for t in config.image_tokenizers]
    ones = lambda *shape: np.ones(shape, bool)
    observation = {f"image_{c}": np.zeros((batch, w, *sizes[c], 3), np.uint8) for c in cameras}
    observation["timestep_pad_mask"] = ones(batch, w)
    observation["pad_mask_dict"] = {f"image_{c}": ones(batch, w) for c in cameras}
    if config.proprio is not None:
        dim = 8
        observation["proprio"] = np.zeros((batch, w, dim), np.float32)
        observation["proprio_pad_mask"] = ones(batch, w, dim)
        observation["pad_mask_dict"]["proprio"] = ones(batch, w)
    goals = [t.camera for t in config.image_tokenizers if t.goal_fusion]
    goals += list(config.goal_image_cameras)
    task = {f"image_{c}": np.zeros((batch, *sizes[c], 3), np.uint8) for c in goals}
    task["pad_mask_dict"] = {f"image_{c}": ones(batch) for c in goals}
    if config.language.encoder != "none":
        task["language_instruction"] = np.array([b"pick up the spoon"] * batch, dtype=object)
        task["pad_mask_dict"]["language_instruction"] = ones(batch)
    return {
        "observation": observation,
        "task": task,
        "action": np.zeros((batch, w, h, config.action_dim), np.float32),
        "action_pad_mask": ones(batch, w, h, config.action_dim),
    }


def abstract_parameters(config: ModelConfig, sizes, tokenizer_dir: str) -> dict[str, int]:
    """Parameter counts of the model `config` describes, built with `nnx.eval_shape`."""
    from octo_like.model import input_spec as spec_lib
    from octo_like.model.model_inputs import tokenize_tasks

    tokenizer = None
    if config.language.encoder != "none":
        tokenizer = TextTokenizer.from_directory(tokenizer_dir, config.language.max_length)
    batch = example_batch(config, sizes)
    if tokenizer is not None:
        batch["task"] = tokenize_tasks(batch["task"], tokenizer)
    spec = spec_lib.spec_from_batch(batch)
    vocab = tokenizer.vocab_size if tokenizer is not None else 0
    module = nnx.eval_shape(lambda: OctoModule(config, spec, vocab, rngs=nnx.Rngs(0)))
    counts = {"total": 0, "language": 0}
    for path, leaf in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        size = int(np.prod(leaf.value.shape))
        counts["total"] += size
        if path[0] == "language_encoder":
            counts["language"] += size
    return counts


def substitute(argv: list[str], fixtures: dict[str, str], workdir: str) -> list[str]:
    """Points the paths at things that exist here; everything else stays as documented."""
    out = []
    for arg in argv:
        if arg.startswith("--config.model.language.checkpoint_dir="):
            arg = f"--config.model.language.checkpoint_dir={fixtures['t5']}"
        elif arg.startswith("--config.pretrained_path="):
            arg = f"--config.pretrained_path={fixtures['pretrained']}"
        out.append(arg)
    if "--workdir" in out:
        out[out.index("--workdir") + 1] = workdir
    else:
        out += ["--workdir", workdir]
    return [str(REPO / out[0]), *out[1:]]


def write_guide_config(home) -> str:
    """The guide's `configs/finetune_my_robot.py` and `~/my_robot_spec.json`, under `home`."""
    source = fenced_block(DATA_GUIDE, f"# {GUIDE_CONFIG}")
    spec = json.loads(fenced_block(DATA_GUIDE, "{"))
    (home / "my_robot_spec.json").write_text(json.dumps(spec))
    path = home / pathlib.Path(GUIDE_CONFIG).name
    path.write_text(source)
    return str(path)


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses_and_builds(where, argv, fixtures, tmp_path, monkeypatch):
    argv = substitute(argv, fixtures, str(tmp_path / "run"))
    if any(a.startswith(f"{GUIDE_CONFIG}:") for a in argv):
        monkeypatch.setenv("HOME", str(tmp_path))
        guide_config = write_guide_config(tmp_path)
        argv = [a.replace(GUIDE_CONFIG, guide_config, 1) for a in argv]
    argv = [a.replace("configs/", f"{REPO}/configs/", 1) if a.startswith("configs/") else a
            for a in argv]  # fmt: skip
    if argv[0].endswith("train.py"):
        config, workdir, _, _ = train.parse_command_line(argv)
        typed = parse_train_config(config, workdir, generated=train.simulated_datasets)
        sizes = {
            name: camera.size or (256, 256) for name, camera in typed.data.frame.cameras.items()
        }
        tokenizer_dir = fixtures["t5"]
    else:
        config, workdir, _, _ = finetune.parse_command_line(argv)
        typed, source = parse_finetune_config(config, workdir)
        assert source.pretrained_path == fixtures["pretrained"]
        sizes = {name: camera.size or (64, 64) for name, camera in typed.data.frame.cameras.items()}
        tokenizer_dir = typed.model.language.checkpoint_dir
    counts = abstract_parameters(typed.model, sizes, tokenizer_dir)
    assert counts["total"] > 0, where
    preset = next((a.split(":", 1)[1] for a in argv if "pretrain.py:" in a), "")
    size = preset.split(",")[0]
    if size in PUBLISHED_PARAMETERS:
        assert typed.model.language.encoder == "t5" and typed.model.language.frozen
        assert typed.data.balance_by_size
        without_t5 = counts["total"] - counts["language"]
        assert abs(without_t5 / PUBLISHED_PARAMETERS[size] - 1) < 0.03, (where, without_t5)
