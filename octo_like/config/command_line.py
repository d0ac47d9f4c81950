"""Parsing an entry point's command line on fresh flag values, so tests and launchers can check
a documented `train.py` / `finetune.py` command without touching the process's global flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def parse_command_line(define_flags: Callable[..., None], argv: list[str]) -> tuple[Any, ...]:
    """(locked config, workdir, overwrite, stop_at_step) of `argv` (argv[0] is the program).

    `define_flags(values, sys_argv=...)`: the entry point's own flag definitions.
    """
    from absl import flags

    from octo_like.config.typed import ConfigError

    values = flags.FlagValues()
    define_flags(values, sys_argv=list(argv))
    try:
        values(argv)
    except KeyError as error:  # ml_collections: an override of a key the config lacks
        key = error.args[0] if error.args else error
        raise ConfigError(f"unknown config key: {key}") from error
    except flags.IllegalFlagValueError as error:  # e.g. --config.num_steps=many
        raise ConfigError(str(error)) from error
    return values.config, values.workdir, values.overwrite, values.stop_at_step
