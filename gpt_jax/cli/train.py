"""Train (or resume) a run:

  python -m gpt_jax.main --config=configs/shakespeare_char_cpu.py --workdir=runs/shk [--config.a.b=v]

Exit codes: 0 done, 2 bad input, 3 stopped on a non-finite loss (nothing saved after the last good
checkpoint), 130 interrupted (checkpoint saved; rerun to resume).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from gpt_jax import run_config
from gpt_jax.cli import flags
from gpt_jax.trainer import train_and_evaluate

USAGE = "usage: python -m gpt_jax.main --config=configs/<name>.py --workdir=DIR [--config.<key>=<value> ...]"
SPEC = [flags.Flag("workdir", help="run directory: checkpoints, logs, configs", required=True)]


def setup_logging() -> None:
    # force: importing orbax (gpt_jax.trainer, above) already gave the root logger a WARNING-level handler
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def train(argv: Sequence[str], spec=SPEC, usage: str = USAGE, prepare=lambda config, values: None) -> int:
    setup_logging()
    config, values = flags.parse(argv, spec, usage=usage, config=True)
    prepare(config, values)
    run_config.apply_cpu_devices(config)
    run_config.apply_compile_cache(config)
    summary = train_and_evaluate(config, values["workdir"])
    sample = summary.pop("sample", None)
    print(json.dumps(summary, indent=2))
    if sample:
        print("---- sample ----\n" + sample)
    if summary.get("status") == "interrupted":
        print(
            f"interrupted at step {summary['step']}: checkpoint saved; rerun the same command to resume",
            file=sys.stderr,
        )
        return flags.EXIT_INTERRUPTED
    return 0


def main(argv: Sequence[str]) -> int:
    return flags.run(train, argv, workdir_hint=lambda: flags.value_of(argv, "workdir"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
