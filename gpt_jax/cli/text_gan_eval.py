"""Score text GANs against the MLE model's temperature sweep (gpt_jax.analysis.text_gan_eval):

python -m gpt_jax.text_gan_eval --gan_workdir=G [--gan_workdir=G2] --mle_workdir=M --oracle_workdir=O
    [--temperatures=0.7,0.8,0.9,1.0,1.1,1.2,1.3] [--num_rows=256] [--all_checkpoints] [--out=DIR]

Writes DIR/text_gan_eval.json (every number and the samples), DIR/text_gan_eval.md (the table) and
DIR/text_gan_quality_diversity.png (the quality-diversity plot); DIR defaults to the first GAN workdir.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

from gpt_jax.analysis import text_gan_eval
from gpt_jax.cli import flags

USAGE = (
    "usage: python -m gpt_jax.text_gan_eval --gan_workdir=G [--gan_workdir=G2] --mle_workdir=M --oracle_workdir=O "
    "[--temperatures=0.7,...,1.3] [--num_rows=256] [--all_checkpoints] [--out=DIR]"
)
SPEC = [
    flags.Flag("gan_workdir", list, [], "a seqgan run's workdir (repeatable; none: the MLE sweep alone)"),
    flags.Flag("mle_workdir", help="the maximum-likelihood LM the GAN started from", required=True),
    flags.Flag("oracle_workdir", help="the oracle LM (stronger, trained on the same data)", required=True),
    flags.Flag("temperatures", str, "0.7,0.8,0.9,1.0,1.1,1.2,1.3", "comma-separated sampling temperatures"),
    flags.Flag("num_rows", int, 256, "held-out windows: prompts for the samples and text for the diversity NLL"),
    flags.Flag("all_checkpoints", bool, False, "also score every kept GAN checkpoint at T=1"),
    flags.Flag("out", str, None, "output directory (default: the first --gan_workdir, else --mle_workdir)"),
]


def text_gan_eval_main(argv: Sequence[str]) -> int:
    _, v = flags.parse(argv, SPEC, usage=USAGE)
    try:
        temps = [float(t) for t in v["temperatures"].split(",") if t.strip()]
    except ValueError:
        raise flags.UsageError(
            f"--temperatures={v['temperatures']!r} is not a comma-separated list of numbers"
        ) from None
    if not temps or min(temps) <= 0:
        raise flags.UsageError(f"--temperatures={v['temperatures']!r} must list temperatures > 0")
    if v["num_rows"] < 2:
        raise flags.UsageError(f"--num_rows={v['num_rows']} must be >= 2 (self-BLEU needs two samples)")
    result = text_gan_eval.evaluate(
        v["gan_workdir"], v["mle_workdir"], v["oracle_workdir"], temps,
        num_rows=v["num_rows"], all_checkpoints=v["all_checkpoints"],
    )  # fmt: skip
    out = pathlib.Path(v["out"] or (v["gan_workdir"] or [v["mle_workdir"]])[0])
    paths = text_gan_eval.write(result, out)
    print(text_gan_eval.format_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: Sequence[str]) -> int:
    return flags.run(text_gan_eval_main, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
