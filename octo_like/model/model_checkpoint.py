"""Saving and loading `OctoModel` checkpoints: orbax items (params, config, dataset
statistics, input spec), checksums verified before anything is restored, parameters restored
straight into the caller's shardings, and fine-tuned checkpoints that store only what differs
from their base.
"""

from __future__ import annotations

import logging
import re
import uuid

import jax
import orbax.checkpoint as ocp
from flax import nnx

from octo_like import storage
from octo_like.model import octo_inputs
from octo_like.model.base_checkpoint import BASE_PARAMS, BaseReference
from octo_like.model.checkpoint_integrity import (
    CheckpointCorruptError,
    check_finite,
    verify_checksums,
    write_checksums,
)
from octo_like.model.checkpoint_layout import (
    FINALIZED_MARKER,
    MODEL_ITEMS,
    check_language_assets,
    copy_language_assets,
    download_step,
    finished_steps,
    handler_registry,
    model_items,
    quiet_orbax,
    read_model_metadata,
    read_only_manager,
)
from octo_like.model.config import LanguageConfig
from octo_like.model.language import TextTokenizer
from octo_like.model.octo_module import OctoModule

log = logging.getLogger(__name__)


def save_model(model, step: int, checkpoint_dir: str, *, overwrite: bool = False) -> None:
    """`OctoModel.save_pretrained`: ``checkpoint_dir/<step>/{params,config,dataset_statistics,
    input_spec}`` plus checksums (a local path or a ``gs://`` URL, which orbax writes directly).

    Never writes over what this call did not write: an existing step is refused unless
    `overwrite`, which writes the new step beside the directory, verifies it, and only then
    swaps it in (local directories); tokenizer files that differ from those the directory's
    steps were saved with are refused. Checksums cover only the bytes this call wrote.
    """
    checkpoint_dir = storage.absolute(checkpoint_dir)
    if not storage.orbax_native(checkpoint_dir):
        raise ValueError(
            f"save_pretrained({checkpoint_dir!r}): orbax writes local paths and "
            f"{storage.ORBAX_SCHEMES} URLs; save locally and copy the directory up"
        )
    step_dir = storage.join(checkpoint_dir, str(step))
    replacing = storage.exists(step_dir)
    if replacing and not overwrite:
        raise FileExistsError(
            f"{step_dir} already exists: save_pretrained never writes over a step (its weights "
            "and checksums would mix with the new ones); pass overwrite=True to replace it whole"
        )
    if replacing and storage.has_scheme(checkpoint_dir):
        raise ValueError(
            f"save_pretrained(overwrite=True) replaces {step_dir} by a directory rename, which "
            "object stores do not have: delete the step first, or save under another step"
        )
    if model.config.language.encoder != "none":
        check_language_assets(model.config, checkpoint_dir)
    if not replacing:
        _write_step(model, step, checkpoint_dir)
        return
    staging = storage.join(checkpoint_dir, f".staging-{step}-{uuid.uuid4().hex[:8]}")
    try:
        _write_step(model, step, staging)
        verify_checksums(storage.join(staging, str(step)))
        retired = storage.join(checkpoint_dir, f".replaced-{step}-{uuid.uuid4().hex[:8]}")
        storage.rename(step_dir, retired)
        storage.rename(storage.join(staging, str(step)), step_dir)
        storage.remove(retired)
    finally:
        storage.remove(staging)


def _write_step(model, step: int, checkpoint_dir: str) -> None:
    config = model.config
    if config.language.encoder != "none":
        config = copy_language_assets(config, checkpoint_dir)
    registry = handler_registry(MODEL_ITEMS)
    with (
        quiet_orbax(),
        ocp.CheckpointManager(checkpoint_dir, handler_registry=registry) as manager,
    ):
        items = model_items(
            nnx.state(model.module, nnx.Param),
            config.to_dict(),
            {n: octo_inputs.without_views(e) for n, e in model.dataset_statistics.items()},
            model.input_spec,
        )
        manager.save(step, args=ocp.args.Composite(**items))
        manager.wait_until_finished()
    if jax.process_index() == 0:
        write_checksums(storage.join(checkpoint_dir, str(step)))


def load_model(cls, checkpoint_dir: str, step: int | None, sharding):
    """`OctoModel.load_pretrained` (see its docstring); `cls` builds the result."""
    checkpoint_dir = storage.absolute(checkpoint_dir)
    if not storage.orbax_native(checkpoint_dir):
        checkpoint_dir, step = download_step(checkpoint_dir, step)
    with read_only_manager(checkpoint_dir) as manager:
        finished = finished_steps(checkpoint_dir)
        step = latest_finished_step(checkpoint_dir) if step is None else step
        if step not in finished:
            raise FileNotFoundError(
                f"checkpoint {checkpoint_dir}/{step} is not a finished save (no "
                f"{FINALIZED_MARKER}: interrupted, or still being written); finished "
                f"steps: {finished}"
            )
        step_dir = storage.join(checkpoint_dir, str(step))
        verify_checksums(step_dir, (*MODEL_ITEMS, BASE_PARAMS))
        meta = read_model_metadata(manager, checkpoint_dir, step)
        config = meta.config
        tokenizer = text_tokenizer(config.language)
        vocab = tokenizer.vocab_size if tokenizer is not None else 0
        abstract = nnx.eval_shape(
            lambda: OctoModule(config, meta.input_spec, vocab, rngs=nnx.Rngs(0))
        )
        graphdef, state = nnx.split(abstract)
        structure = params = nnx.state(abstract, nnx.Param).to_pure_dict()
        reference = _base_reference(manager, checkpoint_dir, step)
        if reference is not None:  # only what differs from the base was saved
            params = reference.strip(params)
        target = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            params,
            _target_shardings(sharding, params),
        )
        try:
            restored = manager.restore(
                step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))
            )["params"]
        except Exception as error:  # noqa: BLE001 - orbax raises a bare Exception for it
            raise _unreadable(step_dir, error) from error
    if reference is not None:
        base = _load_base(cls, reference, checkpoint_dir, sharding)
        restored = reference.complete(structure, restored, nnx.state(base.module, nnx.Param))
    check_finite(restored, f"checkpoint {step_dir}")
    nnx.replace_by_pure_dict(state, restored)
    module = nnx.merge(graphdef, state)
    return cls(module, config, meta.input_spec, meta.dataset_statistics, tokenizer)


def _unreadable(step_dir: str, error: Exception) -> CheckpointCorruptError:
    """A params restore that failed (TensorStore's error on a truncated or damaged array of a
    step without checksums, which nothing caught earlier), naming the step and the array."""
    text = str(error)
    found = re.search(r"params/([^/\"' ]+)", text)
    array = f"array '{found.group(1)}'" if found else "an array"
    first = text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__
    return CheckpointCorruptError(
        f"checkpoint {step_dir}: {array} of item 'params' cannot be read ({first}); the step "
        "has no checksums to say more: load an earlier step, or save this one again"
    )


def latest_finished_step(checkpoint_dir: str) -> int:
    """The step `load_model` reads when none is named: the newest finished save (a higher
    step directory without orbax's finalization marker is a save still running, or killed)."""
    finished = finished_steps(checkpoint_dir)
    unfinished = [
        int(name)
        for name in storage.listdir(checkpoint_dir)
        if name.isdigit() and int(name) not in finished
    ]
    newer = sorted(s for s in unfinished if not finished or s > finished[-1])
    if not finished:
        raise FileNotFoundError(
            f"no complete checkpoint under {checkpoint_dir!r}"
            + (f" (step(s) {newer} unfinished: no {FINALIZED_MARKER})" if newer else "")
        )
    if newer:
        log.warning(
            "%s: step(s) %s unfinished (no %s: a save still running, or killed), loading step %d",
            checkpoint_dir, newer, FINALIZED_MARKER, finished[-1],
        )  # fmt: skip
    return finished[-1]


def _target_shardings(sharding, abstract_params):
    """A tree of shardings matching `abstract_params` (see `OctoModel.load_pretrained`)."""
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda _: sharding, abstract_params)
    shardings = sharding(abstract_params)
    if jax.tree.structure(shardings) != jax.tree.structure(abstract_params):
        raise ValueError("load_pretrained: the sharding function must return one per parameter")
    return shardings


def _base_reference(manager, checkpoint_dir: str, step: int) -> BaseReference | None:
    if not storage.isdir(storage.join(checkpoint_dir, str(step), BASE_PARAMS)):
        return None
    item = manager.restore(step, args=ocp.args.Composite(**{BASE_PARAMS: ocp.args.JsonRestore()}))
    return BaseReference.from_dict(item[BASE_PARAMS])


def _load_base(cls, reference: BaseReference, checkpoint_dir: str, sharding):
    try:
        return cls.load_pretrained(reference.checkpoint_dir, reference.step, sharding=sharding)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{checkpoint_dir} stores only the parameters that differ from its base checkpoint "
            f"{reference.checkpoint_dir} (step {reference.step}), which cannot be loaded "
            f"({error}); put the base back there"
        ) from error


def text_tokenizer(language: LanguageConfig) -> TextTokenizer | None:
    if language.encoder == "none":
        return None
    return TextTokenizer.from_directory(language.checkpoint_dir, max_length=language.max_length)
