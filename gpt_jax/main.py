"""Entry point: python -m gpt_jax.main --config=configs/shakespeare_char_cpu.py --workdir=runs/shk [--config.a.b=v]"""

from __future__ import annotations

import json
import logging
import sys

from gpt_jax import run_config

USAGE = "usage: python -m gpt_jax.main --config=configs/<name>.py --workdir=DIR [--config.<key>=<value> ...]"


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config, flags = run_config.parse_args(argv)
        unknown = sorted(set(flags) - {"workdir"})
        if unknown or "workdir" not in flags:
            raise ValueError(f"unknown flag(s) {unknown}; {USAGE}" if unknown else f"--workdir is required; {USAGE}")
        run_config.apply_cpu_devices(config)
        run_config.apply_compile_cache(config)
        from gpt_jax.trainer import train_and_evaluate  # heavy imports after argument checks

        summary = train_and_evaluate(config, flags["workdir"])
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sample = summary.pop("sample", None)
    print(json.dumps(summary, indent=2))
    if sample:
        print("---- sample ----\n" + sample)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
