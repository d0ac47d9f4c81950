"""Wrong configs, and two runs on one workdir: train.py's debug preset with one bad value."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.drill.common import REPO, case, expect_error, one_line


def _train(ctx, *flags: str, stop_at_step: int = 1):
    import train

    argv = ["train.py", "--config", f"{REPO / 'configs/pretrain.py'}:debug", *flags]
    config, _, _, _ = train.parse_command_line(argv)
    config.data_dir = str(ctx.tmp / "data")
    config.data.statistics_cache_dir = str(ctx.tmp / "stats")
    config.tensorboard = False
    return train.main(config, str(ctx.tmp / "run"), stop_at_step=stop_at_step)


def _bad_flag(case_id: str, flag: str, names: str) -> None:
    @case(case_id, "config")
    def run(ctx):
        return expect_error(lambda: _train(ctx, flag), names, silent_if="training started")


_bad_flag("config-typo-key", "--config.model.haed.kind=l1", r"haed")
_bad_flag("config-head-difusion", "--config.model.head.kind=difusion", r"difusion")
_bad_flag("config-transformer-tinyy", "--config.model.transformer=tinyy", r"tinyy")
_bad_flag("config-mesh-fsdp-3", "--config.mesh.fsdp=3", r"fsdp|mesh")
_bad_flag("config-negative-batch", "--config.data.batch_size=-4", r"batch_size")
_bad_flag("config-string-for-int", "--config.num_steps=many", r"num_steps|many")


@case("config-two-runs-one-workdir", "config")
def two_runs(ctx):
    """A second train.py on a workdir held by a running one is refused by name."""
    hold = (
        "import sys, time\nfrom octo_like.training.checkpoints.workdir_lock import WorkdirLock\n"
        "with WorkdirLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(300)\n"
    )
    (ctx.tmp / "run").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(ctx.tmp / "run")], stdout=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        return expect_error(lambda: _train(ctx), r"pid \d+", silent_if="second run started")
    finally:
        holder.kill()
        holder.wait()


@case("config-overwrite-refused", "config")
def overwrite(ctx):
    """A workdir holding another run's files is not silently trained over."""
    run = ctx.tmp / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": {"transformer": "base"}}')
    try:
        result = _train(ctx)
    except Exception as error:  # noqa: BLE001
        from tests.drill.common import classify_error

        return classify_error(error, r"config|overwrite|workdir")
    return "silent", one_line(f"trained over a foreign config.json: {result!r}")
