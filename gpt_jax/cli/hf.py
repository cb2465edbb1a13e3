"""Hugging Face GPT-2 folders <-> gpt_jax workdirs:

  python -m gpt_jax.hf import --hf_dir=D --workdir=W [--tokenizer=PATH] [--seed=0]
  python -m gpt_jax.hf export --workdir=W --hf_dir=D

See gpt_jax.interop.hf_workdir for what each writes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from gpt_jax.cli import flags
from gpt_jax.interop.hf_workdir import export_workdir, import_workdir

USAGE = (
    "usage: python -m gpt_jax.hf import --hf_dir=D --workdir=W [--tokenizer=PATH] [--seed=N]\n"
    "       python -m gpt_jax.hf export --workdir=W --hf_dir=D"
)
SPEC = {
    "import": [
        flags.Flag("hf_dir", help="a local Hugging Face GPT-2 folder", required=True),
        flags.Flag("workdir", help="the workdir to write", required=True),
        flags.Flag("tokenizer", help="a tokenizer folder or file, if the HF folder has none"),
        flags.Flag("seed", int, 0, "the run's seed (for fine-tuning it later)"),
    ],
    "export": [
        flags.Flag("workdir", help="a run directory", required=True),
        flags.Flag("hf_dir", help="the folder to write", required=True),
    ],
}


def convert(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in SPEC:
        raise flags.UsageError(f"the first argument is import or export; {USAGE}")
    _, values = flags.parse(argv[1:], SPEC[argv[0]], usage=USAGE)
    if argv[0] == "import":
        result = import_workdir(
            values["hf_dir"], values["workdir"], tokenizer_path=values["tokenizer"], seed=values["seed"]
        )
        result.pop("model")
    else:
        result = export_workdir(values["workdir"], values["hf_dir"])
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str]) -> int:
    return flags.run(convert, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
