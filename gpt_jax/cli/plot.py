"""Loss curves of one or more runs to one PNG:

python -m gpt_jax.plot --workdir=runs/a [runs/b ...] [--out=loss.png]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gpt_jax.analysis.plot import plot_workdirs
from gpt_jax.cli import flags

USAGE = "usage: python -m gpt_jax.plot --workdir=W [W2 ...] [--out=loss.png]"
SPEC = [
    flags.Flag("workdir", list, [], "a run's workdir (repeatable; more may follow as plain arguments)"),
    flags.Flag("out", str, "loss.png", "PNG to write"),
]


def plot(argv: Sequence[str]) -> int:
    _, values = flags.parse(argv, SPEC, usage=USAGE, positional=True)
    workdirs = values["workdir"] + values["args"]
    if not workdirs:
        raise flags.UsageError(f"no --workdir given; {USAGE}")
    plot_workdirs(workdirs, values["out"])
    print(f"wrote {values['out']}")
    return 0


def main(argv: Sequence[str]) -> int:
    return flags.run(plot, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
