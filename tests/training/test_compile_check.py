"""The compile check (scripts/compile_check.py): a config's exact train step compiled by XLA's TPU
compiler for a real topology's compile-only devices (libtpu, installed by `make test`)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import train
from octo_like.model.config import ImageTokenizerConfig, LanguageConfig, ModelConfig
from octo_like.model.octo_module import OctoModule
from octo_like.training.config import parse_train_config
from octo_like.training.parallel import distributed
from octo_like.training.pods import compile_check, libtpu_host
from octo_like.training.run import run_data
from octo_like.training.run.abstract_inputs import abstract_batch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))

import compile_check as compile_check_script  # noqa: E402


def _typed(preset: str, workdir: str, *overrides: str):
    argv = ["train.py", "--config", f"configs/pretrain.py:{preset}", "--workdir", workdir]
    config, workdir, _, _ = train.parse_command_line([*argv, *overrides])
    return parse_train_config(config, workdir, generated=train.simulated_datasets)


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def test_the_abstract_batch_is_the_batch_the_loop_feeds(tmp_path):
    """Same keys, shapes and dtypes as a real pipeline batch after host-side tokenization."""
    typed = _typed("debug", str(tmp_path / "run"))
    run_data.prepare_synthetic_data(typed)
    from octo_like.data.pipeline import make_pipeline
    from octo_like.model.octo_model import _text_tokenizer

    pipeline = make_pipeline(
        typed.data, distributed.process_shard(), prepared=run_data.prepare_datasets(typed)
    )
    model = types.SimpleNamespace(text_tokenizer=_text_tokenizer(typed.model.language))
    real = run_data.host_batch(next(iter(pipeline)), model)
    real = {k: v for k, v in _leaves(real) if np.asarray(v).dtype != object}
    abstract = dict(
        _leaves(abstract_batch(typed, proprio_dim=real["observation/proprio"].shape[-1]))
    )
    assert sorted(abstract) == sorted(real)
    for path, leaf in abstract.items():
        assert (leaf.shape, leaf.dtype) == (real[path].shape, real[path].dtype), path


def test_auto_settings_resolve_for_the_target_not_the_host():
    """On this CPU host, a module built for 'tpu' computes in bfloat16 with TPU attention."""
    config = ModelConfig(
        transformer="dummy",
        image_tokenizers=(ImageTokenizerConfig("primary", num_features=16),),
        language=LanguageConfig(encoder="none"),
        dtype="auto",
    )
    spec = {"observation": {"image_primary": {"shape": [2, 32, 32, 3], "dtype": "uint8"}},
            "task": {}}  # fmt: skip
    build = lambda platform: nnx.eval_shape(
        lambda: OctoModule(config, spec, 0, rngs=nnx.Rngs(0), platform=platform)
    )
    assert build("tpu").dtype == jnp.bfloat16
    assert build("").dtype == jnp.float32  # this host's backend: cpu
    resolved = compile_check.resolve_for_target(config, "tpu", tokens=16)
    assert resolved == {"dtype": "auto -> bfloat16", "attention": "auto -> einsum"}
    assert compile_check.resolve_for_target(config, "cpu", 16)["attention"] == "auto -> lean"


def _run_script(capsys, *argv: str) -> dict:
    result = compile_check_script.main(list(argv))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(result))  # the JSON line is the result
    return json.loads(last)


@pytest.mark.slow
def test_a_small_preset_compiles_for_a_v5e_slice(capsys):
    report = _run_script(
        capsys, "--topology", "v5e:2x2", "--",
        "--config", "configs/pretrain.py:laptop", "--config.data.batch_size=64",
    )  # fmt: skip
    assert report["device_kind"] == "TPU v5 lite" and report["chips"] == 4
    assert report["mesh"] == {"data": 4, "fsdp": 1} and report["fits"] is True
    memory = report["memory"]
    assert min(memory[k] for k in ("arguments", "outputs", "temporaries", "code")) > 0
    assert memory["aliased"] > 0.9 * memory["outputs"]  # the donated state is updated in place
    expected = sum(memory[k] for k in ("arguments", "outputs", "temporaries", "code"))
    assert memory["total"] == expected - memory["aliased"] < report["hbm_bytes"]
    # Matmuls and convolutions dominate: XLA's count and the analytic one agree.
    assert report["xla_flops"] == pytest.approx(report["analytic_flops"], rel=0.05)
    assert report["collectives"]["all-reduce"]["count"] > 0  # data-parallel gradients
    assert report["ideal_step_s"] > 0 and report["compile_s"] > 0


def test_a_preset_that_does_not_fit_says_what_would(capsys):
    report = _run_script(
        capsys, "--topology", "v5e:2x2", "--",
        "--config", "configs/pretrain.py:laptop", "--config.data.batch_size=131072",
    )  # fmt: skip
    assert report["fits"] is False
    assert report["memory"]["total"] > report["hbm_bytes"]
    advice = " ".join(report["suggestions"])
    assert "--config.data.batch_size=" in advice and "--config.model.remat=" in advice
    suggested = int(advice.split("--config.data.batch_size=")[1].split()[0])
    assert suggested < 131072 and suggested % 4 == 0


def test_bad_topologies_and_configs_are_named(capsys):
    with pytest.raises(SystemExit) as raised:
        compile_check_script.main(
            ["--topology", "v4:3x3x3x3", "--", "--config", "configs/pretrain.py:debug"]
        )
    assert raised.value.code == 2
    assert "libtpu does not know topology 'v4:3x3x3x3'" in capsys.readouterr().err


def test_per_chip_bytes_count_shards_not_arrays():
    devices = compile_check.topology_devices("v5e:2x2")
    mesh = jax.sharding.Mesh(np.array(devices).reshape(4), ("data",))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    tree = {
        "split": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=split),
        "whole": jax.ShapeDtypeStruct((8, 4), jnp.bfloat16, sharding=whole),
    }
    assert compile_check.per_chip_bytes(tree) == 2 * 4 * 4 + 8 * 4 * 2
    message = "RESOURCE_EXHAUSTED: the total memory required for HLO temporaries (61.19G) "
    message += "exceeds available HBM (15.75G)."
    need, have = compile_check.out_of_memory(message)
    assert need == int(61.19 * 2**30) and have == int(15.75 * 2**30)
    assert compile_check.out_of_memory("INTERNAL: something else") is None


REPO = pathlib.Path(__file__).resolve().parents[2]
# What libtpu wrote to stderr on a CPU host before every check's report (issue 41.4).
LIBTPU_NOISE = (
    "Failed to find host bounds",
    "could not determine TPU accelerator type",
    "unexpected worker hostname",
    "Logging before InitGoogle",
)


def _fresh_process(*argv: str, **environ: str) -> subprocess.CompletedProcess:
    """A new Python process (libtpu says its start-up lines once per process)."""
    env = {k: v for k, v in os.environ.items() if k not in libtpu_host.CPU_HOST_SETTINGS}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO,
                          env={**env, **environ}, timeout=300)  # fmt: skip


def test_the_check_on_a_cpu_host_says_real_errors_and_no_libtpu_start_up_noise():
    """The command as a user runs it: libtpu loads (then refuses the topology); its error is
    shown, its warnings about the TPU VM this host is not are not."""
    done = _fresh_process(
        "scripts/compile_check.py", "--topology", "v4:3x3x3x3", "--",
        "--config", "configs/pretrain.py:debug",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "libtpu does not know topology 'v4:3x3x3x3'" in done.stderr
    assert "Invalid topology layout" in done.stderr  # libtpu's own words
    for noise in LIBTPU_NOISE:
        assert noise not in done.stderr, done.stderr


def test_the_cpu_host_settings_leave_the_topology_as_libtpu_describes_it():
    """Chips, their hosts and coordinates of a v4-128 are the same with and without them."""
    describe = (  # libtpu alone: the project's imports would double the test's time
        "from jax.experimental.topologies import get_topology_desc as t\n"
        "devices = t('v4:4x4x4', platform='tpu', chip_config_name='megacore').devices\n"
        "print(sorted((d.id, d.process_index, tuple(d.coords)) for d in devices))"
    )
    plain = _fresh_process("-c", describe)
    quiet = _fresh_process("-c", describe, **libtpu_host.CPU_HOST_SETTINGS)
    assert plain.returncode == quiet.returncode == 0, plain.stderr + quiet.stderr
    assert plain.stdout == quiet.stdout and plain.stdout.count("(") > 64
    assert "Failed to find host bounds" in plain.stderr  # what the settings are for
    assert "Failed to find host bounds" not in quiet.stderr


def test_the_cpu_host_settings_are_for_cpu_hosts_and_keep_what_the_user_set():
    assert libtpu_host.cpu_host_environment({}, has_tpu_chips=False) == {
        "TPU_HOST_BOUNDS": "1,1,1",
        "TPU_WORKER_HOSTNAMES": "localhost",
    }
    assert libtpu_host.cpu_host_environment({}, has_tpu_chips=True) == {}  # a TPU VM
    mine = {"TPU_WORKER_HOSTNAMES": "10.0.0.2"}
    assert libtpu_host.cpu_host_environment(mine, False) == {"TPU_HOST_BOUNDS": "1,1,1"}
    assert isinstance(libtpu_host.host_has_tpu_chips(), bool)
