"""Score a GAN run's samples with our digit classifier (gpt_jax.analysis.digit_eval):

python -m gpt_jax.gan_eval --workdir=W [--all_checkpoints] [--classifier_dir=runs/digit_classifier/DATASET]
    [--num_samples=2000]

Prints the Fréchet distance, confident share and class-histogram entropy of the EMA generator's samples
beside the same numbers for real training images (the floor); writes W/gan_eval.json (and
W/fd_curve.png with --all_checkpoints: every kept checkpoint scored). The classifier is trained once
(fixed recipe, ~1 minute on 2 cores) and cached in --classifier_dir.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

from gpt_jax.analysis import gan_run
from gpt_jax.cli import flags
from gpt_jax.workdir import read_run_file

USAGE = "usage: python -m gpt_jax.gan_eval --workdir=W [--all_checkpoints] [--classifier_dir=DIR] [--num_samples=2000]"
SPEC = [
    flags.Flag("workdir", help="a GAN run's workdir (task.name='gan')", required=True),
    flags.Flag(
        "classifier_dir", str, None, "where the digit classifier is cached (default runs/digit_classifier/<dataset>)"
    ),
    flags.Flag("num_samples", int, 2000, "generated (and real floor) images scored"),
    flags.Flag("all_checkpoints", bool, False, "score every kept checkpoint: the FD curve over training"),
]


def gan_eval(argv: Sequence[str]) -> int:
    _, values = flags.parse(argv, SPEC, usage=USAGE)
    workdir = values["workdir"]
    gan_run.require_gan(workdir)
    if values["num_samples"] < 2:
        raise flags.UsageError(f"--num_samples={values['num_samples']} must be >= 2 (a covariance needs two)")
    dataset = read_run_file(workdir, "config.json")["gan"]["dataset"]
    classifier_dir = values["classifier_dir"] or pathlib.Path("runs") / "digit_classifier" / dataset.replace(":", "_")
    result = gan_run.evaluate_workdir(
        workdir, classifier_dir, n=values["num_samples"], all_checkpoints=values["all_checkpoints"]
    )
    print(gan_run.format_result(result))
    print(f"wrote {pathlib.Path(workdir) / 'gan_eval.json'}")
    return 0


def main(argv: Sequence[str]) -> int:
    return flags.run(gan_eval, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
