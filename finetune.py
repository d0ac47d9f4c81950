"""Fine-tuning entry point: the training loop of train.py, started from a pretrained checkpoint.

    python finetune.py --config configs/finetune.py:lora,language --workdir runs/ft_lora \
        --config.pretrained_path=runs/laptop/checkpoints \
        --config.dataset.name=my_robot --config.dataset.location=/data/my_robot/1.0.0 \
        [--config.KEY=VALUE ...] [--overwrite]

Prints which pretrained parameters were reused, newly initialized, dropped or shape-mismatched.
Rerunning a command on an existing workdir resumes it, as with train.py; the result loads with
`OctoModel.load_pretrained(WORKDIR/checkpoints)`.
"""

from __future__ import annotations

from octo_like.host import lean_tensorflow, prefer_cpu_without_accelerators
from octo_like.training.run.entry_point import run_and_report, run_training_command_line

lean_tensorflow()  # before anything imports TensorFlow
prefer_cpu_without_accelerators()  # before JAX starts: no TPU runtime probe on a laptop


def main(
    config,
    workdir: str,
    *,
    overwrite: bool = False,
    stop_at_step: int | None = None,
    echo=None,
):
    """Fine-tunes (or resumes); `config` is the locked ConfigDict of configs/finetune.py.

    `echo(text)` receives the parameter reuse table (default: logged). Returns the loop's
    RunResult and the `ReuseReport` of the pretrained parameters.
    """
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # tf.data only: keep accelerators for JAX

    from octo_like.training.config import distributed_config
    from octo_like.training.finetuning.finetune import PretrainedInitializer
    from octo_like.training.finetuning.finetune_config import parse_finetune_config
    from octo_like.training.parallel import distributed
    from octo_like.training.run.loop import run
    from octo_like.training.run.train_program import optimizer_config

    # Multi-host first: reading the pretrained checkpoint's config already starts JAX.
    distributed.initialize(distributed_config(config))
    typed, source = parse_finetune_config(config, workdir)
    kwargs = {} if echo is None or not distributed.is_main_process() else {"echo": echo}
    initializer = PretrainedInitializer(
        source, typed.model, optimizer_config(typed).frozen, mesh_config=typed.mesh, **kwargs
    )
    result = run(
        typed,
        workdir,
        raw_config=config,
        overwrite=overwrite,
        stop_at_step=stop_at_step,
        init_model=initializer,
    )
    return result, initializer.report


def _define_flags(values, sys_argv: list[str] | None = None) -> None:
    """finetune.py's flags on `values`; `sys_argv`: the command line the config overrides are
    read from (default: sys.argv at parse time)."""
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config",
        None,
        "configs/finetune.py:MODE,TASK",
        lock_config=True,
        flag_values=values,
        sys_argv=sys_argv,
    )
    flags.DEFINE_string("workdir", None, "the run's directory (its identity)", flag_values=values)
    flags.DEFINE_bool(
        "overwrite", False, "move aside a workdir made with another config", flag_values=values
    )
    flags.DEFINE_integer(
        "stop_at_step", None, "stop early at this step (e.g. before preemption)", flag_values=values
    )
    flags.mark_flags_as_required(["config", "workdir"], flag_values=values)


def parse_command_line(argv: list[str]):
    """(locked config, workdir, overwrite, stop_at_step) of a finetune.py command line (argv[0] is
    the program), parsed on fresh flag values: tests and launchers check commands with it."""
    from octo_like.config.command_line import parse_command_line as parse

    return parse(_define_flags, argv)


def _run_from_flags(values) -> None:
    run_and_report(
        lambda: main(
            values.config, values.workdir, overwrite=values.overwrite,
            stop_at_step=values.stop_at_step, echo=print,
        )[0],
        values.workdir,
    )  # fmt: skip


def _cli():
    """A typo'd config key or a bad config value is one line and exit status 2."""
    run_training_command_line(_define_flags, _run_from_flags)


if __name__ == "__main__":
    _cli()
