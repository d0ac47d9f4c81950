"""Drill cases (issue 40): a user's data that a run would not read: cameras and proprio keys named
with the config line that adds them."""

from __future__ import annotations

import logging

from tests.drill.common import case, classify_error, one_line

SPEC = (
    'dict(image_keys=dict(primary="front", wrist="wrist"), proprio_key="state", '
    'action_encoding="custom", standardize="identity")'
)
CONFIG = """
from configs import finetune


def get_config(arg: str = "full,language"):
    c = finetune.get_config(arg)
    c.pretrained_path = {pretrained!r}
    c.dataset.name = "my_robot"
    c.dataset.location = {location!r}
    c.data.extra_specs = {{"my_robot": {spec}}}
    c.model.action_dim = 3
    return c
"""


def _pretrained_front_only(ctx) -> str:
    """Like `runs/laptop`: one `primary` camera and no proprio (a tiny random model)."""
    import numpy as np

    from octo_like.model.config import LanguageConfig
    from tests.training.test_finetune import tiny_batch, tiny_config, tiny_model

    batch = tiny_batch()
    batch["task"]["language_instruction"] = np.array([b"pick up the cup"] * 2, dtype=object)
    batch["task"]["pad_mask_dict"]["language_instruction"] = np.ones(2, bool)
    language = LanguageConfig(encoder="small", checkpoint_dir=str(ctx.language), small_width=16)
    model = tiny_model(tiny_config(language=language), batch)
    directory = ctx.tmp / "pretrained" / "checkpoints"
    model.save_pretrained(0, str(directory))
    return str(directory)


@case("finetune-unread-wrist-and-state", "inputs")
def unread_wrist_and_state(ctx):
    """README quick start 2's case: the example episodes' `wrist` camera and 6-dim `state`,
    fine-tuned from a model that reads one camera and no proprio. The run must name both keys
    with the override that adds them (a WARNING before training), not train without them."""
    import finetune
    from octo_like.training.finetuning.finetune_config import parse_finetune_config

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        path = ctx.tmp / "finetune_my_robot.py"
        path.write_text(
            CONFIG.format(
                pretrained=_pretrained_front_only(ctx), location=str(ctx.tmp / "data"), spec=SPEC
            )
        )
        argv = ["finetune.py", "--config", str(path), "--workdir", str(ctx.tmp / "run")]
        config, workdir, _, _ = finetune.parse_command_line(argv)
        typed, _ = parse_finetune_config(config, workdir)
    except Exception as error:  # noqa: BLE001 - classifying is the point
        return classify_error(error, r"wrist|state")
    finally:
        logging.getLogger().removeHandler(handler)
    named = [
        r
        for r in records
        if "'wrist'" in r
        and "'state'" in r
        and "--config.model.image_tokenizers=" in r
        and "--config.model.proprio=" in r
    ]
    if named:
        return "named", one_line(f"warning: {named[0]}", 240)
    return "silent", (
        f"the model reads cameras {list(typed.model.cameras)}, proprio {typed.model.proprio}; "
        "the dataset's wrist camera and state dropped without a word"
    )
