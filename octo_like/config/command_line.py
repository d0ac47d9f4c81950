"""An entry point's command line: parsed on fresh flag values for tests and launchers
(`parse_command_line`), or for real by `run_command_line`, where a config error is one line.

ml_collections applies ``--config.KEY=VALUE`` overrides while the flags are defined (train.py's
default config) or parsed, and a typo'd key escapes as a raw ``KeyError`` / ``AttributeError``
from deep inside it (a 55-line traceback on the real command line). Both paths turn it into a
`ConfigError` naming the flag and the closest existing key of the whole config.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from octo_like.config.typed import ConfigError

OVERRIDE = re.compile(r"^--?config\.([^=]+)(=.*)?$")
CLI_ERROR_STATUS = 2  # a usage error, as argparse's


def parse_command_line(define_flags: Callable[..., None], argv: list[str]) -> tuple[Any, ...]:
    """(locked config, workdir, overwrite, stop_at_step) of `argv` (argv[0] is the program).

    `define_flags(values, sys_argv=...)`: the entry point's own flag definitions.
    """
    from absl import flags

    values = flags.FlagValues()
    with config_errors(define_flags, argv):
        define_flags(values, sys_argv=list(argv))
        values(argv)
    return values.config, values.workdir, values.overwrite, values.stop_at_step


def run_command_line(
    define_flags: Callable[..., None],
    main: Callable[[Any], None],
    argv: list[str] | None = None,
    refusals: Callable[[], tuple[type[BaseException], ...]] | None = None,
) -> None:
    """The real command line (absl's global flags, `app.run`): `main(flags.FLAGS)` once the
    flags parse. A typo'd config key, an unparsable value, an unknown flag, or a `ConfigError`
    raised by `main` (a bad config value) is one line on stderr and exit status 2, no traceback:
    the fix is in the command, not in the code. `refusals()`: the entry point's errors whose
    message names the problem (a bad dataset, a workdir in use, a corrupt checkpoint), one line
    and exit status 1; called once the flags parsed (it may import the heavy modules)."""
    from absl import app, flags

    argv = list(sys.argv if argv is None else argv)
    program = os.path.basename(argv[0])
    with _one_line_exit(program), config_errors(define_flags, argv):
        define_flags(flags.FLAGS, sys_argv=argv)

    def parse(args: list[str]) -> list[str]:
        with _one_line_exit(program), config_errors(define_flags, args):
            return flags.FLAGS(args)

    def run(args: list[str]) -> None:
        del args
        kinds = refusals() if refusals is not None else ()
        with _one_line_exit(program), _one_line_refusal(program, kinds):
            main(flags.FLAGS)

    app.run(run, argv=argv, flags_parser=parse)


@contextlib.contextmanager
def _one_line_exit(program: str) -> Iterator[None]:
    from absl import flags

    try:
        yield
    except (ConfigError, flags.Error) as error:
        sys.stdout.flush()
        text = " ".join(str(error).split())
        print(f"{program}: {type(error).__name__}: {text}", file=sys.stderr, flush=True)
        sys.exit(CLI_ERROR_STATUS)


@contextlib.contextmanager
def _one_line_refusal(program: str, refusals: tuple[type[BaseException], ...]) -> Iterator[None]:
    try:
        yield
    except refusals as error:
        sys.stdout.flush()
        print(f"{program}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


@contextlib.contextmanager
def config_errors(define_flags: Callable[..., None], argv: list[str]) -> Iterator[None]:
    """ml_collections' and absl's errors about ``--config.*`` overrides in `argv` -> ConfigError."""
    from absl import flags

    try:
        yield
    except (KeyError, AttributeError) as error:
        named = _unknown_key(define_flags, argv, error)
        if named is None:  # not about an override: a genuine bug, keep its traceback
            raise
        raise named from error
    except flags.IllegalFlagValueError as error:  # e.g. --config.num_steps=many
        raise ConfigError(" ".join(str(error).split())) from error


def _unknown_key(define_flags, argv: list[str], error: Exception) -> ConfigError | None:
    """The ConfigError of an override naming a key the config lacks, or None when `error` is
    not one: ml_collections' message starts with the missing key, quoted."""
    found = re.match(r"""^\W*'([^'\\]+)""", str(error.args[0] if error.args else error))
    if found is None:
        return None
    key = found.group(1)
    for arg in argv[1:]:
        override = OVERRIDE.match(arg)
        if override and key in override.group(1).split("."):
            path = override.group(1)
            hint = _closest(define_flags, argv, path)
            return ConfigError(
                f"unknown config key {key!r} in {arg}"
                + (f"; did you mean --config.{hint}?" if hint else "; no similar key in the config")
            )
    return None


def _closest(define_flags, argv: list[str], path: str) -> str | None:
    """The config's dotted key closest to `path` (whole path first, then its last part), read
    from the config `argv` loads without its overrides."""
    try:
        config = _base_config(define_flags, argv)
    except Exception:  # noqa: BLE001 - only a suggestion: the unknown key is named regardless
        return None
    if config is None:
        return None
    keys = sorted(_dotted_keys(config))
    match = difflib.get_close_matches(path, keys, n=1, cutoff=0.75)
    if match:
        return match[0]
    last = path.rsplit(".", 1)[-1]
    names = {key.rsplit(".", 1)[-1] for key in keys}
    close = difflib.get_close_matches(last, sorted(names), n=1, cutoff=0.7)
    if not close:
        return None
    return " or --config.".join(k for k in keys if k.rsplit(".", 1)[-1] == close[0])


def _base_config(define_flags, argv: list[str]):
    from absl import flags

    base, skip = [argv[0]], False
    for i, arg in enumerate(argv[1:], start=1):
        if skip:
            skip = False
            continue
        override = OVERRIDE.match(arg)
        if override:  # `--config.KEY VALUE` takes the next argument as its value
            skip = override.group(2) is None and i + 1 < len(argv)
            continue
        base.append(arg)
    values = flags.FlagValues()
    define_flags(values, sys_argv=base)
    values(base, known_only=True)
    return values.config


def _dotted_keys(config, prefix: str = "") -> Iterator[str]:
    import ml_collections

    for key, value in config.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, ml_collections.ConfigDict):
            yield from _dotted_keys(value, f"{path}.")
