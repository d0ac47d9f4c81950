"""Pretraining entry point.

    python train.py                                    # the laptop default (make train)
    python train.py --config configs/pretrain.py:debug --workdir runs/debug
    python train.py --config configs/pretrain.py:small,oxe_magic_soup --workdir runs/small \
        --config.data_dir=/data/oxe --config.model.language.checkpoint_dir=/models/t5-base \
        [--config.KEY=VALUE ...] [--overwrite]

Rerunning a command on an existing workdir resumes it; a workdir made with another config is
refused unless --overwrite (the old one is then moved aside, never deleted).
"""

from __future__ import annotations

import os

from octo_like.host import lean_tensorflow, prefer_cpu_without_accelerators
from octo_like.training.run.entry_point import run_and_report, run_training_command_line

lean_tensorflow()  # before anything imports TensorFlow
prefer_cpu_without_accelerators()  # before JAX starts: no TPU runtime probe on a laptop

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "configs", "pretrain.py:laptop"
)


def main(config, workdir: str, *, overwrite: bool = False, stop_at_step: int | None = None):
    """Runs (or resumes) training; `config` is the locked ml_collections ConfigDict."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # tf.data only: keep accelerators for JAX

    from octo_like.training.config import parse_train_config
    from octo_like.training.parallel import distributed
    from octo_like.training.run.loop import run

    typed = parse_train_config(config, workdir, generated=simulated_datasets)
    distributed.initialize(typed.distributed)
    if typed.collects_simulated_data:  # MetaWorld demonstrations, collected on first use
        generated = simulated_datasets(typed.mix, typed.simulation)
        distributed.on_main_process_then_sync(generated.ensure, "simulated data written")
    return run(
        typed, workdir, raw_config=config, overwrite=overwrite, stop_at_step=stop_at_step,
        closed_loop=closed_loop_eval(typed),
    )  # fmt: skip


def closed_loop_eval(typed):
    """Closed-loop success during training for a simulated mix with simulation.eval_every."""
    from octo_like.training.config import SIMULATED_MIXES

    if typed.mix not in SIMULATED_MIXES or not typed.simulation.eval_every:
        return None
    from octo_like.envs.training_eval import ClosedLoopEval

    return ClosedLoopEval.from_simulation(typed.simulation, typed.mix)


def simulated_datasets(mix: str, simulation):
    """The `GeneratedDatasets` of a simulated mix (imported only when one is used)."""
    from octo_like.envs.simulated_data import SimulatedDatasets

    return SimulatedDatasets(mix, simulation)


def _define_flags(values, sys_argv: list[str] | None = None) -> None:
    """train.py's flags on `values`; `sys_argv`: the command line the config overrides are read
    from (default: sys.argv at parse time)."""
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config",
        DEFAULT_CONFIG,
        "configs/FILE.py:ARG",
        lock_config=True,
        flag_values=values,
        sys_argv=sys_argv,
    )
    flags.DEFINE_string(
        "workdir", "runs/laptop", "the run's directory (its identity)", flag_values=values
    )
    flags.DEFINE_bool(
        "overwrite", False, "move aside a workdir made with another config", flag_values=values
    )
    flags.DEFINE_integer(
        "stop_at_step", None, "stop early at this step (e.g. before preemption)", flag_values=values
    )


def parse_command_line(argv: list[str]):
    """(locked config, workdir, overwrite, stop_at_step) of a train.py command line (argv[0] is
    the program), parsed on fresh flag values: tests and launchers check commands with it."""
    from octo_like.config.command_line import parse_command_line as parse

    return parse(_define_flags, argv)


def _run_from_flags(values) -> None:
    run_and_report(
        lambda: main(
            values.config, values.workdir, overwrite=values.overwrite,
            stop_at_step=values.stop_at_step,
        ),
        values.workdir,
    )  # fmt: skip


def _cli():
    """A typo'd config key or a bad config value is one line and exit status 2."""
    run_training_command_line(_define_flags, _run_from_flags)


if __name__ == "__main__":
    _cli()
