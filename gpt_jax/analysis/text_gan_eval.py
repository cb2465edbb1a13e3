"""The text GAN measured as in "Language GANs Falling Short" (Caccia et al., ICLR 2020).

Every model continues the same held-out prompts (the first `prompt_len` tokens of `num_rows` fixed
held-out windows of `seq_len` tokens) at a temperature T, and is scored on two axes:
- quality: the oracle's NLL (nats/token) of the generated tokens (an independent, stronger LM of ours);
- diversity: the model's own NLL of the held-out windows under its tempered distribution softmax(logits / T)
  (nats/token; high = it puts little mass on real text), plus self-BLEU-4 of the samples (words).
Lower is better on both NLL axes. The MLE model's temperature sweep traces its trade-off curve; a GAN helps
only if its points lie below that curve.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gpt_jax import data as data_lib
from gpt_jax.analysis import text_gan_metrics
from gpt_jax.analysis.plot import curve, read_records
from gpt_jax.data.sources import load_text_splits
from gpt_jax.generation.scan_sample import fill
from gpt_jax.model import GPT
from gpt_jax.models import gpt
from gpt_jax.workdir import load_run, load_state, read_run

PROMPT_SEED = 2020  # which held-out windows the prompts come from
SAMPLE_SEED = 7


def heldout_windows(config, tokenizer, num_rows: int, seq_len: int) -> np.ndarray:
    """[num_rows, seq_len + 1] fixed windows of the validation split (inputs plus the next token)."""
    d = config.data
    text = load_text_splits(d.dataset, manual_dir=d.get("manual_dir"), data_dir=d.get("tfds_dir"))["validation"]
    b = data_lib.eval_batches(tokenizer.encode(text), num_rows, seq_len, 1, PROMPT_SEED)
    return np.concatenate([b["inputs"][0], b["targets"][0][:, -1:]], axis=1)


def _nll_BxL(cfg, params, ids_BxL, targets_BxL, temperature=1.0):
    logits = GPT(cfg).apply({"params": params}, ids_BxL) / temperature
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets_BxL)


# Module-level jits (temperature traced): one compilation per model shape, not per temperature.
_fill = jax.jit(fill, static_argnums=0)
_nll = jax.jit(_nll_BxL, static_argnums=0)


def score(model_cfg, params, oracle_cfg, oracle_params, windows, prompt_len: int, temperature: float, tokenizer):
    """{quality, diversity, self_bleu, samples} of one model at one temperature (see the module doc)."""
    inputs, targets = jnp.asarray(windows[:, :-1]), jnp.asarray(windows[:, 1:])
    keep = jnp.full((inputs.shape[0],), prompt_len - 1)
    temp = jnp.asarray(temperature, jnp.float32)
    rows = _fill(model_cfg, params, inputs, keep, jax.random.key(SAMPLE_SEED), temp)
    # oracle NLL of generated tokens: position i predicts token i + 1; tokens prompt_len.. are generated
    oracle_nll = _nll(oracle_cfg, oracle_params, rows[:, :-1], rows[:, 1:])
    quality = float(oracle_nll[:, prompt_len - 1 :].mean())
    own = _nll(model_cfg, params, inputs, targets, temp)
    texts = [tokenizer.decode(np.asarray(r[prompt_len:]).tolist()) for r in rows]
    return {
        "temperature": float(temperature),
        "quality_oracle_nll": quality,
        "diversity_nll": float(own.mean()),
        "self_bleu": text_gan_metrics.self_bleu(texts),
        "samples": [tokenizer.decode(np.asarray(r[:prompt_len]).tolist()) + " | " + t for r, t in zip(rows, texts)],
    }


def gan_generator(workdir, step: int | None = None):
    """(generator config, generator params, step) of a seqgan run's checkpoint (default: the newest)."""
    config, model_cfg = read_run(workdir)
    state = load_state(workdir, model_cfg, gpt.FAMILY, step=step)
    return config, model_cfg, state["params"]["generator"], int(state["step"])


def checkpoint_steps(workdir) -> list[int]:
    ckpts = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []


def evaluate(
    gan_workdirs: list[str],
    mle_workdir: str,
    oracle_workdir: str,
    temperatures: list[float],
    *,
    num_rows: int = 256,
    all_checkpoints: bool = False,
) -> dict[str, Any]:
    """Every curve and point of the comparison, as a JSON-able dict."""
    oracle_config, oracle_cfg, oracle_params, tokenizer = load_run(oracle_workdir)
    _, mle_cfg, mle_params, mle_tok = load_run(mle_workdir)
    if mle_tok.vocab_size != tokenizer.vocab_size:
        raise ValueError("--mle_workdir and --oracle_workdir use different tokenizers; train both on the same data")
    gan_config = read_run(gan_workdirs[0])[0] if gan_workdirs else None
    s = gan_config.seqgan if gan_config else {"seq_len": mle_cfg.block_size, "prompt_len": 8}
    seq_len, prompt_len = int(s["seq_len"]), int(s["prompt_len"])
    windows = heldout_windows(oracle_config, tokenizer, num_rows, seq_len)
    real = jnp.asarray(windows)
    oracle_real = _nll(oracle_cfg, oracle_params, real[:, :-1], real[:, 1:])
    real_texts = [tokenizer.decode(w[prompt_len:seq_len].tolist()) for w in windows]
    run = lambda cfg, p, t: score(cfg, p, oracle_cfg, oracle_params, windows, prompt_len, t, tokenizer)
    out: dict[str, Any] = {
        "num_rows": num_rows, "seq_len": seq_len, "prompt_len": prompt_len,
        "oracle_workdir": str(oracle_workdir), "mle_workdir": str(mle_workdir),
        "real": {
            "quality_oracle_nll": float(oracle_real[:, prompt_len - 1 :].mean()),
            "self_bleu": text_gan_metrics.self_bleu(real_texts),
            "samples": real_texts[:8],
        },
        "mle": [run(mle_cfg, mle_params, t) for t in temperatures],
        "gans": {},
    }  # fmt: skip
    for wd in gan_workdirs:
        config, cfg, params, step = gan_generator(wd)
        entry = {"step": step, "sweep": [run(cfg, params, t) for t in temperatures], "checkpoints": []}
        if all_checkpoints:
            for st in checkpoint_steps(wd):
                _, _, p, _ = gan_generator(wd, st)
                entry["checkpoints"].append({"step": st, **run(cfg, p, 1.0)})
        records = read_records(wd)
        entry["d_accuracy"] = dict(zip(*curve(records, "val_d_accuracy")))
        entry["val_nll"] = dict(zip(*curve(records, "val_loss")))
        entry["estimator"] = config.seqgan.estimator
        entry["adversarial_weight"] = float(config.seqgan.get("adversarial_weight", 1.0))
        out["gans"][str(wd)] = entry
    return out


def _row(name, r):
    return (
        f"| {name} | {r['temperature']:.2f} | {r['quality_oracle_nll']:.4f} | {r['diversity_nll']:.4f} | "
        f"{r['self_bleu']:.4f} |"
    )


def _name(wd: str, g: dict[str, Any]) -> str:
    """A run's label: GAN (estimator) or, with adversarial_weight 0, the MLE-only control; its workdir's name."""
    kind = "MLE-only control" if g.get("adversarial_weight", 1.0) == 0 else f"GAN {g['estimator']}"
    return f"{kind} `{pathlib.Path(wd).name}`"


def format_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| model | T | quality: oracle NLL of samples (lower better) | diversity: NLL of held-out text (lower better) | self-BLEU-4 (lower = more diverse) |",
        "|---|---|---|---|---|",
    ]
    lines += [_row("MLE", r) for r in result["mle"]]
    for wd, g in result["gans"].items():
        lines += [_row(f"{_name(wd, g)}, step {g['step']}", r) for r in g["sweep"]]
        lines += [_row(f"{_name(wd, g)}, checkpoint {c['step']}", c) for c in g["checkpoints"]]
    real = result["real"]
    lines.append(f"| real held-out text | - | {real['quality_oracle_nll']:.4f} | - | {real['self_bleu']:.4f} |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    import matplotlib  # lazy: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after the backend is chosen

    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    xs = lambda rs: [r["diversity_nll"] for r in rs]
    ys = lambda rs: [r["quality_oracle_nll"] for r in rs]
    ax.plot(xs(result["mle"]), ys(result["mle"]), "o-", label="MLE, temperature sweep")
    for r in result["mle"]:
        ax.annotate(f"{r['temperature']:g}", (r["diversity_nll"], r["quality_oracle_nll"]), fontsize=7)
    for wd, g in result["gans"].items():
        name = _name(wd, g).replace("`", "")
        ax.plot(xs(g["sweep"]), ys(g["sweep"]), "s--", label=f"{name} (step {g['step']}), T sweep")
        if g["checkpoints"]:
            ax.plot(xs(g["checkpoints"]), ys(g["checkpoints"]), "x:", label=f"{name} checkpoints, T=1")
    ax.axhline(result["real"]["quality_oracle_nll"], color="grey", lw=0.8, label="real held-out text (oracle NLL)")
    ax.set_xlabel("diversity: NLL of held-out text under the model (nats/char)")
    ax.set_ylabel("quality: oracle NLL of samples (nats/char)")
    ax.set_title("Quality vs diversity (lower-left is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(result: dict[str, Any], out_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "text_gan_eval.json", "md": out_dir / "text_gan_eval.md"}
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["md"].write_text(format_markdown(result) + "\n")
    paths["png"] = plot(result, out_dir / "text_gan_quality_diversity.png")
    return paths
