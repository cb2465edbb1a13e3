"""The one flag parser of every entry point: absl flags + `ml_collections.config_flags`, as big_vision
and nanodo use them. `--config path` or `--config=path[:arg]` (`arg` goes to `get_config(arg)`),
`--config.a.b=value` overrides typed by the config's own fields, `--help`; an unknown config key is an
error naming the closest valid one. `run()` turns errors into one line on stderr and an exit code.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from gpt_jax import run_config
from gpt_jax.nonfinite import NonFiniteError
from gpt_jax.workdir_lock import WorkdirLockedError

EXIT_USAGE, EXIT_NONFINITE, EXIT_INTERRUPTED = 2, 3, 130
_DEFINE = {
    str: flags.DEFINE_string,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    bool: flags.DEFINE_bool,
    list: flags.DEFINE_multi_string,  # repeatable: --stop=a --stop=b
}


@dataclasses.dataclass(frozen=True)
class Flag:
    name: str
    kind: type = str  # str | int | float | bool | list (a repeatable string)
    default: Any = None
    help: str = ""
    required: bool = False


class UsageError(ValueError):
    """Bad command line: printed as one line with the command's usage."""


def _config_path(argv: Sequence[str]) -> str | None:
    return value_of(argv, "config")


def _override_error(argv: Sequence[str], fallback: Exception) -> ValueError:
    """One line naming the first bad `--config.<key>=<value>` and the closest valid key (config_flags
    raises a multi-line KeyError or "unknown flag")."""
    config = run_config.load_config(_config_path(argv).split(":", 1)[0])
    for arg in argv:
        if arg.startswith("--config.") and "=" in arg:
            name, value = arg[len("--config.") :].split("=", 1)
            try:
                run_config.set_override(config, name, value)
            except ValueError as e:
                return e
    return UsageError(str(fallback).strip("'\"").splitlines()[0])


def parse(
    argv: Sequence[str], spec: Sequence[Flag], *, usage: str, config: bool = False, positional: bool = False
) -> tuple[ml_collections.ConfigDict | None, dict[str, Any]]:
    """(config or None, {flag: value}) from `argv` (without the program name). `config=True`: a
    `--config` file is required and `--config.*` overrides are accepted. `positional=True`: arguments
    that are not flags are returned as values["args"] (else they are an error)."""
    if "--help" in argv or "-h" in argv:
        lines = [usage] + [f"  --{f.name}: {f.help}" + (" (required)" if f.required else "") for f in spec]
        if config:
            lines.append("  --config: a get_config() file, as path or path:arg; --config.<key>=<value> overrides")
        raise SystemExit(print("\n".join(lines)))
    path = _config_path(argv)
    if config and path is None:
        raise UsageError(f"no --config given; {usage}")
    if path:
        run_config.add_config_root(path.split(":", 1)[0])
        if not os.path.isfile(path.split(":", 1)[0]):
            raise FileNotFoundError(f"config file {path.split(':', 1)[0]!r} not found; pass --config=configs/<name>.py")
    fv = flags.FlagValues()
    full = ["gpt_jax", *argv]
    if config:
        config_flags.DEFINE_config_file("config", flag_values=fv, lock_config=False, sys_argv=full)
    for f in spec:
        _DEFINE[f.kind](f.name, f.default, f.help, flag_values=fv)
    try:
        rest = fv(full)
    except flags.UnrecognizedFlagError as e:
        if config and e.flagname.startswith("config."):
            raise _override_error(argv, e) from None
        raise UsageError(f"unknown flag --{e.flagname}; {usage}") from None
    except flags.Error as e:
        raise UsageError(f"{str(e).splitlines()[0]}; {usage}") from None
    except (KeyError, AttributeError, TypeError) as e:  # config_flags on a misspelt key
        if not config:
            raise
        raise _override_error(argv, e) from None
    if len(rest) > 1 and not positional:
        raise UsageError(f"unexpected argument(s) {rest[1:]}; {usage}")
    values = {f.name: fv[f.name].value for f in spec}
    if positional:
        values["args"] = list(rest[1:])
    missing = [f"--{f.name}" for f in spec if f.required and values[f.name] in (None, "")]
    if missing:
        raise UsageError(f"{', '.join(missing)} is required; {usage}")
    return (fv.config if config else None), values


def run(
    main: Callable[[Sequence[str]], int], argv: Sequence[str], workdir_hint: Callable[[], str | None] = lambda: None
) -> int:
    """`main(argv)` with every expected failure as one `error: ...` line on stderr and an exit code:
    2 bad input, 3 a diverged run, 130 interrupted."""
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's notes on read-only checkpoint readers
    try:
        return main(argv)
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except (ValueError, FileNotFoundError, ImportError, WorkdirLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted (a training run saves its checkpoint first and exits 130 itself)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:  # disk full, read-only or vanished files while running
        where = e.filename or workdir_hint() or "the workdir"
        fix = "free space or fix permissions there, then rerun the same command to resume from the last checkpoint"
        print(f"error: {e.strerror or e} (in {where}); {fix}", file=sys.stderr)
        return EXIT_USAGE


def value_of(argv: Sequence[str], name: str) -> str | None:
    """`--name=value` or `--name value` from raw argv (for error messages before or after parsing)."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None
