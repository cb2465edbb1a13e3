"""A trained GAN workdir: its EMA generator at any checkpoint, scored by gpt_jax.analysis.digit_eval
(against the held-out split, beside the real-vs-real floor), and its Fréchet-distance curve."""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

from gpt_jax import workdir as workdir_lib
from gpt_jax.analysis import digit_eval, gan_samples
from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
from gpt_jax.data.images import load_image_splits
from gpt_jax.models import registry as models
from gpt_jax.paths import as_path

EVAL_SEED = 2024  # the noise and labels of the scored samples (not the grids')


def is_gan(workdir) -> bool:
    path = as_path(workdir) / "config.json"
    return path.is_file() and (json.loads(path.read_text()).get("task") or {}).get("name") == "gan"


def require_gan(workdir) -> None:
    if not is_gan(workdir):
        raise ValueError(f"{workdir} is not a GAN run (its config.json has no task.name='gan'); pass a GAN workdir")


def checkpoint_steps(workdir) -> list[int]:
    with Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True) as ckpt:
        return ckpt.steps()


def load_generator(workdir, step: int | None = None):
    """(config, DCGANConfig, EMA generator params, step) of checkpoint `step` (default: the newest good one)."""
    require_gan(workdir)
    config, cfg = workdir_lib.read_run(workdir)
    state = workdir_lib.load_state(workdir, cfg, models.family_of(config.model), step=step)
    return config, cfg, state["params"]["generator_ema"], int(state["step"])


def sample_labels(cfg, n: int, seed: int = EVAL_SEED):
    return np.random.default_rng(seed).integers(0, cfg.num_classes, n).astype(np.int32) if cfg.num_classes else None


class Scorer:
    """The classifier and held-out features, computed once for every checkpoint scored."""

    def __init__(self, dataset: str, classifier_dir, n: int = 2000):
        self.dataset, self.n = dataset, n
        self.splits = load_image_splits(dataset)
        self.params, self.info = digit_eval.load_or_train(dataset, classifier_dir, splits=self.splits)
        self.reference = digit_eval.features(self.params, self.splits["validation"]["images"])

    def floor(self) -> dict:
        return digit_eval.real_floor(self.params, self.splits, self.n)

    def score_generator(self, cfg, g_params) -> dict:
        labels = sample_labels(cfg, self.n)
        images = gan_samples.generate(cfg, g_params, self.n, EVAL_SEED, labels)
        return digit_eval.score(self.params, images, self.reference, labels)


def evaluate_workdir(workdir, classifier_dir, *, n: int = 2000, all_checkpoints: bool = False) -> dict:
    """Scores of the newest checkpoint (and of every kept one with `all_checkpoints`): gan_eval.json."""
    workdir = pathlib.Path(workdir)
    require_gan(workdir)
    t0 = time.perf_counter()
    config, _, _, last = load_generator(workdir)
    scorer = Scorer(config.gan.dataset, classifier_dir, n)
    steps = checkpoint_steps(workdir) if all_checkpoints else [last]
    curve = []
    for step in steps:
        _, cfg, g_params, step = load_generator(workdir, step)
        curve.append({"step": step, **scorer.score_generator(cfg, g_params)})
    result = {
        "dataset": config.gan.dataset,
        "classifier": {k: scorer.info[k] for k in ("held_out_accuracy", "recipe", "recipe_version")},
        "samples": curve[-1],
        "real_vs_held_out": scorer.floor(),
        "curve": curve,
        "eval_s": time.perf_counter() - t0,
    }
    (workdir / "gan_eval.json").write_text(json.dumps(result, indent=2))
    if len(curve) > 1:
        plot_curve(curve, result["real_vs_held_out"]["frechet_distance"], workdir / "fd_curve.png")
    return result


def plot_curve(curve: list[dict], floor: float, path) -> None:
    import matplotlib  # lazy: plotting only when there is a curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after the backend is set

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [c["step"] for c in curve]
    ax.plot(steps, [c["frechet_distance"] for c in curve], "o-", label="EMA generator vs held-out")
    ax.axhline(floor, color="gray", ls="--", label="real train vs held-out (floor)")
    ax.set(xlabel="step", ylabel="Fréchet distance (digit-CNN features)", yscale="log")
    ax.legend(fontsize=8)
    ax2.plot(steps, [c["confident_share"] for c in curve], "o-", label="confident (p >= 0.9)")
    ax2.plot(steps, [c["class_entropy_share_of_max"] for c in curve], "s-", label="class entropy / ln 10")
    ax2.axhline(0.9, color="gray", ls=":")
    ax2.set(xlabel="step", ylim=(0, 1.02))
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def format_result(result: dict) -> str:
    rows = [("samples", result["samples"]), ("real train (floor)", result["real_vs_held_out"])]
    lines = [
        f"classifier held-out accuracy: {result['classifier']['held_out_accuracy']:.4f}",
        f"{'':20s} {'FD':>9s} {'conf>=0.9':>10s} {'entropy/ln10':>13s} {'label agree':>12s}",
    ]
    for name, r in rows:
        agree = r.get("label_agreement")
        lines.append(
            f"{name:20s} {r['frechet_distance']:9.3f} {r['confident_share']:10.4f} "
            f"{r['class_entropy_share_of_max']:13.4f} {'-' if agree is None else f'{agree:.4f}':>12s}"
        )
    if len(result["curve"]) > 1:
        lines.append("FD curve: " + ", ".join(f"{c['step']}: {c['frechet_distance']:.2f}" for c in result["curve"]))
    return "\n".join(lines)


def sample_grid(workdir, num_images: int = 100, seed: int = 0) -> pathlib.Path:
    """`python -m gpt_jax.sample` on a GAN run: a grid PNG of the EMA generator's images (class-conditional:
    digit c in column c), W/sample_seed<seed>.png; returns its path."""
    _, cfg, g_params, step = load_generator(workdir)
    path = pathlib.Path(workdir) / f"sample_seed{seed}.png"
    images = gan_samples.generate(cfg, g_params, num_images, seed, gan_samples.grid_labels(cfg, num_images))
    return gan_samples.write_png(path, images, cols=10, scale=2)
