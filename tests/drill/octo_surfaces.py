"""Drill cases (issue 69): the surfaces wave 4 added. Writing a checkpoint over what the call
did not write, convert_octo.py's output and inputs, Octo's call forms, and the rest of the
checkpoint and run class (a lease renewed in the future, an unfinished newest step)."""

from __future__ import annotations

import json
import logging
import pathlib
import shutil
import time

from tests.drill.common import REPO, case, expect_error, one_line

OCTO = REPO / "tests" / "fixtures" / "octo15"


def _octo_copy(ctx) -> tuple[pathlib.Path, pathlib.Path]:
    shutil.copytree(OCTO / "octo_tiny", ctx.tmp / "octo")
    shutil.copytree(OCTO / "tiny_t5", ctx.tmp / "t5")
    return ctx.tmp / "octo", ctx.tmp / "t5"


def _convert(octo, t5, out):
    from octo_like.model.octo_import.convert import convert_octo

    return lambda: convert_octo(str(octo), str(t5), str(out))


# ------------------------------------------------------------------ writes (item 1)
@case("save-onto-existing-step", "octo-surfaces")
def save_onto_existing_step(ctx):
    from octo_like.model.octo_model import OctoModel

    copy = ctx.tmp / "checkpoints"
    shutil.copytree(ctx.checkpoint, copy)
    step = max(int(p.name) for p in copy.iterdir() if p.name.isdigit())
    model = OctoModel.load_pretrained(str(copy), step)
    return expect_error(lambda: model.save_pretrained(step, str(copy)), r"already exists")


@case("convert-into-run-checkpoints", "octo-surfaces")
def convert_into_run_checkpoints(ctx):
    octo, t5 = _octo_copy(ctx)
    copy = ctx.tmp / "checkpoints"
    shutil.copytree(ctx.checkpoint, copy)
    return expect_error(_convert(octo, t5, copy), r"already holds a checkpoint")


@case("convert-out-is-octo-dir", "octo-surfaces")
def convert_out_is_octo_dir(ctx):
    octo, t5 = _octo_copy(ctx)
    return expect_error(_convert(octo, t5, octo), r"--octo_dir .* overlaps it")


# ------------------------------------------------------------------ inputs (item 4)
def _damaged_input(case_id: str, relative: str, names: str, how: str = "truncate") -> None:
    @case(case_id, "octo-surfaces")
    def run(ctx):
        octo, t5 = _octo_copy(ctx)
        path = (t5 if relative == "spiece.model" else octo) / relative
        if how == "truncate":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            path.write_bytes(b"\xff garbage \x00" * 4)
        return expect_error(_convert(octo, t5, ctx.tmp / "out"), names)


_damaged_input("octo-config-truncated", "config.json", r"config\.json: not valid JSON")
_damaged_input("octo-statistics-garbage", "dataset_statistics.json", r"statistics\.json", "g")
_damaged_input("octo-example-batch-truncated", "example_batch.msgpack", r"example_batch\.msgpack")
_damaged_input("octo-metadata-garbage", "300000/default/_METADATA", r"_METADATA", "garbage")
_damaged_input("octo-checkpoint-truncated", "300000/default/checkpoint", r"default/checkpoint")
_damaged_input("octo-spiece-truncated", "spiece.model", r"spiece\.model: not a sentencepiece")


@case("octo-statistics-mask-length", "octo-surfaces")
def octo_statistics_mask_length(ctx):
    octo, t5 = _octo_copy(ctx)
    path = octo / "dataset_statistics.json"
    statistics = json.loads(path.read_text())
    name = next(iter(statistics))
    statistics[name]["action"]["mask"] = statistics[name]["action"]["mask"][:-1]
    path.write_text(json.dumps(statistics))
    return expect_error(_convert(octo, t5, ctx.tmp / "out"), r"statistics have lengths")


# ------------------------------------------------------------------ call forms (item 3)
def _octo_model():
    from octo_like.model.octo_import.convert import import_octo

    return import_octo(str(OCTO / "octo_tiny"), str(OCTO / "tiny_t5"))


def _call_case(case_id: str, names: str, call) -> None:
    @case(case_id, "octo-surfaces")
    def run(ctx):
        import jax

        model = _octo_model()
        observations = model.example_batch["observation"]
        tasks = model.create_tasks(texts=["pick up the fork"])
        model.sample_actions(observations, tasks, rng=jax.random.key(0))  # the healthy call
        return expect_error(lambda: call(model, observations, tasks, jax), names)


def _goal(model, dtype="uint8", key="image_primary"):
    import numpy as np

    shape = model.input_spec["task"]["image_primary"]["shape"]
    return {key: np.zeros((1, *shape), dtype)}


_call_case(
    "call-goal-unknown-key", r"image_top",
    lambda m, o, t, jax: m.create_tasks(goals=_goal(m, key="image_top")),
)  # fmt: skip
_call_case(
    "call-goal-float", r"dtype float64",
    lambda m, o, t, jax: m.create_tasks(goals=_goal(m, "float64")),
)  # fmt: skip
_call_case(
    "call-observation-misspelled", r"image_primery",
    lambda m, o, t, jax: m.sample_actions(
        {("image_primery" if k == "image_primary" else k): v for k, v in o.items()}, t,
        rng=jax.random.key(0),
    ),
)  # fmt: skip
_call_case(
    "call-swapped-dicts", r"swapped",
    lambda m, o, t, jax: m.sample_actions(t, o, rng=jax.random.key(0)),
)  # fmt: skip
_call_case(
    "call-rng-int", r"rng must be a JAX key",
    lambda m, o, t, jax: m.sample_actions(o, t, rng=0),
)  # fmt: skip
_call_case(
    "call-statistics-name", r"is a name",
    lambda m, o, t, jax: m.sample_actions(
        o, t, rng=jax.random.key(0), unnormalization_statistics=sorted(m.dataset_statistics)[0]
    ),
)  # fmt: skip


# ------------------------------------------------------------------ runs (item 5)
@case("lease-renewed-in-the-future", "octo-surfaces")
def lease_renewed_in_the_future(ctx):
    from octo_like.training.checkpoints.workdir_lock import WorkdirLock
    from tests import memory_fs
    from tests.training.leases import write_lease

    memory_fs.register()  # leases are for object stores (a local workdir is flock'ed)
    workdir = f"{memory_fs.SCHEME}drill-lease-{time.time_ns()}/run"
    write_lease(workdir, run_id="elsewhere-job", renewed=time.time() + 1e9)
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("octo_like.training.checkpoints.workdir_lock")
    logger.addHandler(Keep())
    try:
        with WorkdirLock(workdir, run_id="drill"):
            pass
    except Exception as error:  # noqa: BLE001 - a refusal here is the finding
        return "raw", one_line(f"{type(error).__name__}: {error}")
    said = [r for r in records if "in the future" in r]
    return ("named", one_line(said[0])) if said else ("silent", "taken over without a word")
