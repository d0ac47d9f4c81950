"""An Octo-1.5 checkpoint, built, saved and run by Octo's own code (tests/fixtures/octo15, see its
README), converted here computes Octo's outputs; switching any Octo behaviour back breaks that.

Tolerances (float32, CPU): every token group's transformer outputs (readouts included) and the
denoiser's output within 1e-5, sampled actions with Octo's recorded noises within 1e-4. Tokens
are compared where Octo's mask holds them real: a padded camera's black frame gives its stem
constant maps, whose GroupNorm variance is rounding noise in both programs (flax computes it as
E[x^2] - E[x]^2), and nothing reads those tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from octo_like.model.config import OCTO_DIFFUSION_BEHAVIOURS, OCTO_MODEL_BEHAVIOURS, ModelConfig
from octo_like.model.octo_import.config import OctoLayoutError, octo_layout
from octo_like.model.octo_import.convert import convert_octo, import_octo, read_octo_params
from octo_like.model.octo_import.params import flatten, map_parameters
from octo_like.model.octo_model import OctoModel
from octo_like.model.octo_module import OctoModule
from tests.training.octo_replay import nested

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "octo15")
OCTO_DIR = os.path.join(FIXTURE, "octo_tiny")
T5_DIR = os.path.join(FIXTURE, "tiny_t5")
with open(os.path.join(FIXTURE, "cases.json")) as f:
    CASES = json.load(f)["cases"]
TOKENS_TOL, EPS_TOL, ACTION_TOL = 1e-5, 1e-5, 1e-4


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    with np.load(os.path.join(FIXTURE, "cases.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def imported() -> OctoModel:
    return import_octo(OCTO_DIR, T5_DIR)


def inputs(arrays, case: str) -> tuple[dict, dict]:
    """Octo's own dictionaries, as Octo's create_tasks and the caller made them."""
    return nested(arrays, f"{case}/observation/"), nested(arrays, f"{case}/task/")


def replay(arrays, case: str, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Octo's draws [K+1, b, w, H*A] -> (x_T, per-step z) of the last window step."""
    noise = arrays[f"{case}/sample/{variant}/noise"]
    return noise[0][..., -1, :], noise[1:][..., -1, :]


def model_outputs(model: OctoModel, arrays, case: str) -> dict[str, np.ndarray]:
    """Every output the equality covers, for one case."""
    observation, task = inputs(arrays, case)
    groups = model.run_transformer(observation, task)
    out = {f"transformer/{n}": np.asarray(g.tokens) for n, g in groups.items()}
    readouts = groups["readout_action"].tokens
    for t in (0, 7, 19):
        noisy = arrays[f"{case}/eps/t{t}/noisy_actions"]
        time = arrays[f"{case}/eps/t{t}/time"][..., 0]
        out[f"eps/t{t}"] = np.asarray(model.module.head.denoise(readouts, noisy, time))
    statistics = model.dataset_statistics[CASES[case]["statistics"]]["action"]
    for variant, given in (("normalized", None), ("unnormalized", statistics)):
        out[f"sample/{variant}"] = model.sample_actions(
            observation,
            task,
            given,
            rng=jax.random.key(0),  # unused: the noises are Octo's
            noise=replay(arrays, case, variant),
        )
    return out


def expected_outputs(arrays, case: str) -> dict[str, np.ndarray]:
    out = {
        f"transformer/{n}": arrays[f"{case}/transformer/{n}/tokens"]
        for n in CASES[case]["token_groups"]
    }
    out.update({f"eps/t{t}": arrays[f"{case}/eps/t{t}/eps"] for t in (0, 7, 19)})
    for variant in ("normalized", "unnormalized"):
        out[f"sample/{variant}"] = arrays[f"{case}/sample/{variant}/actions"]
    return out


def tolerance(name: str) -> float:
    if name.startswith("sample/"):
        return ACTION_TOL
    return EPS_TOL if name.startswith("eps/") else TOKENS_TOL


def max_differences(model, arrays, case) -> dict[str, float]:
    ours, theirs = model_outputs(model, arrays, case), expected_outputs(arrays, case)
    diffs = {}
    for name, want in theirs.items():
        if name not in ours or ours[name].shape != want.shape:  # another token layout
            diffs[name] = float("inf")
            continue
        got = ours[name]
        error = np.abs(got.astype(np.float64) - want)
        if name.startswith("transformer/"):  # real tokens only
            real = arrays[f"{case}/{name}/mask"].astype(bool)
            error = np.where(real[..., None], error, 0.0)
        diffs[name] = float(np.max(error))
    return diffs


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_equal_octos(imported, arrays, case):
    diffs = max_differences(imported, arrays, case)
    too_far = {n: d for n, d in diffs.items() if not d <= tolerance(n)}
    assert not too_far, f"{case}: {too_far}"
    observation, task = inputs(arrays, case)
    groups = imported.run_transformer(observation, task)
    for name in CASES[case]["token_groups"]:  # masks as Octo applied them
        want = arrays[f"{case}/transformer/{name}/mask"].astype(bool)
        np.testing.assert_array_equal(np.asarray(groups[name].mask), want, err_msg=name)


def with_behaviour(model: OctoModel, name: str, value) -> OctoModel:
    """The same weights under a config with one behaviour switched back."""
    config = model.config
    if name in OCTO_DIFFUSION_BEHAVIOURS:
        head = dataclasses.replace(config.head, kwargs={**config.head.kwargs, name: value})
        config = dataclasses.replace(config, head=head)
    else:
        config = dataclasses.replace(config, **{name: value})
    vocab = model.text_tokenizer.vocab_size
    module = OctoModule(config, model.input_spec, vocab, rngs=nnx.Rngs(0))
    nnx.update(module, nnx.state(model.module, nnx.Param))
    return OctoModel(
        module, config, model.input_spec, model.dataset_statistics, model.text_tokenizer
    )


OCTO_LIKE_VARIANTS = {
    "repeat_task_tokens": False,
    "mask_padded_readouts": True,
    "goal_padding": "grey",
    "language_token_mask": True,
    "stem_standardization": "rsqrt_variance",
    "time_input": "unit",
    "sampler": "posterior",
}


def test_every_behaviour_is_tested():
    assert set(OCTO_LIKE_VARIANTS) == {*OCTO_MODEL_BEHAVIOURS, *OCTO_DIFFUSION_BEHAVIOURS}


@pytest.mark.parametrize("behaviour", sorted(OCTO_LIKE_VARIANTS))
def test_switching_a_behaviour_back_breaks_equality(imported, arrays, behaviour):
    """The equality above can fail: each of Octo's behaviours changes some output of some case
    beyond the tolerance when it takes octo_like's variant."""
    switched = with_behaviour(imported, behaviour, OCTO_LIKE_VARIANTS[behaviour])
    worst = 0.0
    for case in sorted(CASES):
        diffs = max_differences(switched, arrays, case)
        worst = max(worst, max(d / tolerance(n) for n, d in diffs.items()))
        if worst > 10:
            break
    assert worst > 10, f"{behaviour}: outputs stay within {worst:.2g}x the tolerance"


def test_the_tensorstore_layout_reads_the_same_parameters():
    """Published checkpoints store each array in its own tensorstore directory; the tiny one
    keeps them inline: both read to the same tree."""
    _, inline = read_octo_params(OCTO_DIR)
    _, stored = read_octo_params(os.path.join(FIXTURE, "octo_tiny_tensorstore"))
    a, b = flatten(inline), flatten(stored)
    assert sorted(a) == sorted(b)
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)


def test_converted_checkpoint_verifies_loads_and_acts_the_same(imported, arrays, tmp_path):
    from scripts import verify_checkpoint

    summary = convert_octo(OCTO_DIR, T5_DIR, str(tmp_path / "native"))
    assert summary["step"] == 300000 and summary["datasets"] == [
        "fixture_dataset",
        "fixture_dataset_5d",
    ]
    assert verify_checkpoint.main([str(tmp_path / "native")]) == 0
    loaded = OctoModel.load_pretrained(str(tmp_path / "native"))
    assert loaded.config == dataclasses.replace(
        imported.config,
        language=dataclasses.replace(
            imported.config.language, checkpoint_dir=loaded.config.language.checkpoint_dir
        ),
    )
    diffs = max_differences(loaded, arrays, "goal_and_language")
    assert max(diffs.values()) <= TOKENS_TOL * 10, diffs
    entry = loaded.dataset_statistics["fixture_dataset"]
    assert (
        entry["action"]["mask"] == arrays["dataset_statistics/fixture_dataset/action/mask"].tolist()
    )


def test_an_octo_1_0_or_unknown_layout_is_refused_by_name():
    with open(os.path.join(OCTO_DIR, "config.json")) as f:
        config = json.load(f)
    assert octo_layout(config, T5_DIR, window=2).model.repeat_task_tokens  # healthy: accepted
    old = json.loads(json.dumps(config))
    old["model"]["repeat_task_tokens"] = False
    with pytest.raises(OctoLayoutError, match="Octo-1.0"):
        octo_layout(old, T5_DIR, window=2)
    del old["model"]["repeat_task_tokens"], old["model"]["use_correct_attention"]
    with pytest.raises(OctoLayoutError, match="Octo-1.0"):
        octo_layout(old, T5_DIR, window=2)
    mapped = json.loads(json.dumps(config))
    mapped["model"]["heads"]["action"]["kwargs"]["use_map"] = True
    with pytest.raises(OctoLayoutError, match="use_map"):
        octo_layout(mapped, T5_DIR, window=2)
    film = json.loads(json.dumps(config))
    film["model"]["observation_tokenizers"]["primary"]["kwargs"]["task_film_keys"] = ["lang"]
    with pytest.raises(OctoLayoutError, match="task_film_keys"):
        octo_layout(film, T5_DIR, window=2)


def test_a_parameter_that_maps_nowhere_or_is_missing_is_named():
    _, params = read_octo_params(OCTO_DIR)
    model = import_octo(OCTO_DIR, T5_DIR)
    shapes = {
        p: tuple(np.shape(v))
        for p, v in flatten(nnx.state(model.module, nnx.Param).to_pure_dict()).items()
    }
    assert len(map_parameters(params, shapes)) == len(shapes)  # healthy: every path filled
    transformer = {**params["octo_transformer"], "obs_primary_extra": {"kernel": np.zeros(2)}}
    with pytest.raises(ValueError, match="map to nothing: octo_transformer/obs_primary_extra"):
        map_parameters({**params, "octo_transformer": transformer}, shapes)
    missing = dict(params)
    missing["heads_action"] = {}
    with pytest.raises(ValueError, match="not filled: head/network"):
        map_parameters(missing, shapes)


def _t5_base(directory) -> str:
    """T5-base's config.json (public facts; no weights are needed for shapes)."""
    os.makedirs(directory, exist_ok=True)
    config = dict(
        d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, vocab_size=32128,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="relu", layer_norm_epsilon=1e-6, dropout_rate=0.1,
    )  # fmt: skip
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return str(directory)


def _input_spec(primary: int, wrist: int) -> dict:
    image = lambda s: {"shape": [s, s, 3], "dtype": "uint8"}
    window = lambda entry: {**entry, "shape": [2, *entry["shape"]]}
    flag = {"shape": [], "dtype": "bool"}
    return {
        "observation": {
            "image_primary": window(image(primary)),
            "image_wrist": window(image(wrist)),
            "timestep_pad_mask": window(flag),
            "pad_mask_dict/image_primary": window(flag),
            "pad_mask_dict/image_wrist": window(flag),
        },
        "task": {
            "image_primary": image(primary),
            "image_wrist": image(wrist),
            "language_tokens": {"shape": [16], "dtype": "int32"},
            "language_mask": {"shape": [16], "dtype": "bool"},
            "pad_mask_dict/language_instruction": flag,
            "pad_mask_dict/image_primary": flag,
            "pad_mask_dict/image_wrist": flag,
        },
    }


@pytest.mark.parametrize("size, preset", [("small", "small"), ("base", "base")])
def test_published_configs_map_every_parameter_with_octos_counts(size, preset, tmp_path):
    """From Octo's own eval_shape of octo-{small,base}-1.5: every path maps, counts match, and
    configs/pretrain.py's preset of that size is the same model."""
    with open(os.path.join(FIXTURE, f"octo_{size}_15_config.json")) as f:
        octo_config = json.load(f)
    with open(os.path.join(FIXTURE, f"octo_{size}_15_params.json")) as f:
        octo_shapes = json.load(f)
    config = octo_layout(octo_config, _t5_base(tmp_path / "t5"), window=2).model
    assert config.transformer == preset and config.repeat_task_tokens
    spec = _input_spec(256, 128)
    abstract = nnx.eval_shape(lambda: OctoModule(config, spec, 32100, rngs=nnx.Rngs(0)))
    ours = {
        p: tuple(v.shape) for p, v in flatten(nnx.state(abstract, nnx.Param).to_pure_dict()).items()
    }
    zero = np.zeros((), np.float32)
    params: dict = {}
    for path, shape in octo_shapes["params"].items():  # zero-copy stand-ins of Octo's arrays
        *parents, leaf = path.split("/")
        node = params
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = np.broadcast_to(zero, tuple(shape))
    mapped = map_parameters(params, ours)
    assert sorted(mapped) == sorted(ours)
    count = sum(int(np.prod(s)) for s in ours.values())
    assert count == octo_shapes["total_params"]
    t5 = sum(int(np.prod(s)) for p, s in ours.items() if p.startswith("language_encoder/"))
    assert count - t5 == octo_shapes["total_params_without_t5"]

    # ...and the project's own preset builds that same model, with Octo's behaviours
    from configs import pretrain

    raw = pretrain.get_config(f"{preset},oxe_magic_soup").model.to_dict()
    raw["language"]["checkpoint_dir"] = config.language.checkpoint_dir
    preset_config = ModelConfig.from_dict(raw)
    for name in ("transformer", "window", "max_horizon", "action_horizon", "action_dim",
                 *OCTO_MODEL_BEHAVIOURS):  # fmt: skip
        assert getattr(preset_config, name) == getattr(config, name), name
    for name, value in OCTO_DIFFUSION_BEHAVIOURS.items():
        assert preset_config.head.kwargs[name] == value == config.head.kwargs[name]
    built = nnx.eval_shape(lambda: OctoModule(preset_config, spec, 32100, rngs=nnx.Rngs(0)))
    shapes = flatten(nnx.state(built, nnx.Param).to_pure_dict())
    assert {p: tuple(v.shape) for p, v in shapes.items()} == ours
