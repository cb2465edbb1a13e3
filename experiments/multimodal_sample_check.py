"""Acceptance check for a trained vqa run: `sample --image` on PNGs written from held-out images gives the
batch evaluation's answer.

  python -m experiments.multimodal_sample_check --workdir=W [--per_kind=10]

For the first `per_kind` held-out rows of each question kind, the evaluation's own logits (VQATask.logits on the
restored state, teacher-forced) give its answer: a row it counts as exact must come back from the CLI as the
true answer, word for word; for any other row the CLI's first answer word must be the evaluation's argmax there
(greedy decoding follows the argmax until its first mistake). The row's images are written as PNGs and the
row's own question text is passed to `python -m gpt_jax.sample` (run in-process). Prints the disagreements
and a count; exit status 1 if any.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np

from gpt_jax.cli import flags
from gpt_jax.cli import sample as sample_cli
from gpt_jax.data import image_io, vqa
from gpt_jax.models import registry as models
from gpt_jax.tasks.vqa import VQATask
from gpt_jax.workdir import load_state, read_run

USAGE = "usage: python -m experiments.multimodal_sample_check --workdir=W [--per_kind=10]"
SPEC = [
    flags.Flag("workdir", help="a trained vqa run", required=True),
    flags.Flag("per_kind", int, 10, "held-out rows checked per question kind"),
]


def sample_answer(workdir, question: str, paths) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = sample_cli.main([f"--workdir={workdir}", *[f"--image={p}" for p in paths], f"--prompt={question}"])
    if rc != 0:
        raise RuntimeError(f"sample exited {rc} on {question!r}")
    return out.getvalue().splitlines()[-1] if out.getvalue() else ""


def check(argv) -> int:
    _, v = flags.parse(argv, SPEC, usage=USAGE)
    workdir = pathlib.Path(v["workdir"])
    config, base_cfg = read_run(workdir)
    task = VQATask(config, workdir)
    state = load_state(workdir, base_cfg, models.get("vlm"))
    tok = task.tokenizer
    logits_fn = jax.jit(task.logits)
    tmp = pathlib.Path(tempfile.mkdtemp())
    agree = total = 0
    start = time.perf_counter()
    for kind in vqa.KINDS:
        rows = np.flatnonzero(task.eval_data["kind"] == vqa.KINDS.index(kind))[: v["per_kind"]]
        batch = {k: x[rows] for k, x in task.eval_data.items()}
        logits = np.asarray(logits_fn(state["params"], state.get("frozen"), batch))
        for j in range(len(rows)):
            answer_pos = batch["weights"][j] > 0
            pred, true = logits[j].argmax(-1)[answer_pos], batch["targets"][j][answer_pos]
            ids = batch["inputs"][j, : batch["prefix_len"][j]]
            question = tok.decode(ids[ids != tok.image_id])
            paths = []
            for i in range(vqa.IMAGES_PER_KIND[kind]):
                paths.append(tmp / f"{kind}_{j}_{i}.png")
                image_io.save_image_png(batch["images"][j, i], paths[-1])
            got = sample_answer(workdir, question, paths)
            if (pred == true).all():
                want = tok.decode([t for t in true if t != tok.eos_id])
                ok = got == want
            else:
                want = "" if pred[0] == tok.eos_id else tok.decode([pred[0]])
                ok = got.split(" ")[0] == want
            agree += ok
            total += 1
            if not ok:
                print(f"DISAGREE {kind} row {rows[j]}: {question!r} sample={got!r} evaluation={want!r}")
    print(f"{agree}/{total} held-out rows: sample --image gave the batch evaluation's answer "
          f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    return 0 if agree == total else 1


if __name__ == "__main__":
    sys.exit(flags.run(check, sys.argv[1:]))
