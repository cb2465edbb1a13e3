"""A trained multimodal ("vlm" family) run for inference: load it, and answer questions about image files.

    run = load_vlm_run(W)                                   # restores; reads nothing but the workdir
    answers = run.answer(["what digit is this?"], [["digit.png"]], GenerateOptions(max_new_tokens=4, temperature=0))

What sample, chat and the attention-map tool share: the run's own preprocessing (gpt_jax.data.image_io at
the encoder's size and channels), its own prompt layout (gpt_jax.data.vqa: one `<image>` per image before
the question unless the question places its own), generation stopping at the tokenizer's `<eos>`.
Nothing is ever written to the workdir.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from gpt_jax import peft
from gpt_jax.data import image_io, vqa
from gpt_jax.data.tokenizers import load_tokenizer
from gpt_jax.generation.multimodal import generate_multimodal
from gpt_jax.generation.options import GenerateOptions, undecodable_ids
from gpt_jax.models import registry as models
from gpt_jax.models.vlm import VLMConfig
from gpt_jax.paths import as_path
from gpt_jax.workdir import load_state, read_run, read_run_file

FAMILY = "vlm"
# How much of the frame a digit's longer side spans in each training set: MNIST centres a 20x20 box in 28x28;
# scikit-learn's 8x8 digits fill their frame. A picture of another size is fitted the same way.
DIGIT_FIT = {"mnist_split": 20 / 28, "tfds:mnist": 20 / 28, "sklearn_digits": 1.0}


def is_multimodal(workdir) -> bool:
    """Whether the run in `workdir` takes images (from its config.json alone: nothing is restored)."""
    config = read_run_file(workdir, "config.json")
    return (config.get("model") or {}).get("family") == FAMILY


def require_multimodal(workdir, flag: str = "--image") -> None:
    if not is_multimodal(workdir):
        config = read_run_file(workdir, "config.json")
        family = (config.get("model") or {}).get("family") or "gpt"
        raise ValueError(
            f"{flag} needs a multimodal run (model.family='vlm'); {workdir} is a {family!r} run, which reads text "
            f"only: drop {flag}, or pass a workdir trained with configs/multimodal/digits_vqa.py"
        )


@dataclasses.dataclass
class VLMRun:
    config: ml_collections.ConfigDict
    model_cfg: VLMConfig  # with the run's PEFT modules (if any) in the LM
    params: Any
    tokenizer: Any

    @property
    def image_shape(self) -> tuple[int, int, int]:
        v = self.model_cfg.vit
        return (v.image_size, v.image_size, v.channels)

    def load_images(self, paths: Sequence) -> np.ndarray:
        """float32 [n, H, W, C]: each file through the run's preprocessing (one-line errors on bad files);
        pictures of another size are fitted the way the run's digits are (DIGIT_FIT)."""
        h, w, c = self.image_shape
        fit = DIGIT_FIT.get((self.config.get("vqa") or {}).get("dataset"))
        loaded = [image_io.load_image(p, (h, w), c, fit=fit) for p in paths]
        return np.stack(loaded) if loaded else np.zeros((0, h, w, c), np.float32)

    def prompt_ids(self, question: str, num_images: int) -> np.ndarray:
        """The question in the run's layout with every image expanded to its tokens; one-line errors."""
        image_io.place_images(question, num_images)  # placeholder count vs images, before the vocabulary check
        return vqa.encode_prompt(self.tokenizer, question, num_images, self.model_cfg.num_image_tokens)

    def options(self, **kw) -> GenerateOptions:
        """Defaults: greedy, a few tokens (answers are short), stop at <eos>, never <pad> or undecodable ids."""
        eos = getattr(self.tokenizer, "eos_id", None)
        kw.setdefault("max_new_tokens", 8)
        kw.setdefault("temperature", 0.0)
        kw.setdefault("stop_ids", () if eos is None else (eos,))
        pad = getattr(self.tokenizer, "pad_id", None)
        banned = undecodable_ids(self.tokenizer.vocab_size, self.model_cfg.lm.vocab_size) + (
            (pad,) if pad is not None else ()
        )
        kw.setdefault("banned_ids", banned)
        return GenerateOptions(**kw)

    def generate(self, questions: Sequence[str], images: Sequence[np.ndarray], options: GenerateOptions):
        """New ids [B, max_new_tokens] for questions with their preprocessed images (one batch, one prefill)."""
        rows = [self.prompt_ids(q, len(imgs)) for q, imgs in zip(questions, images)]
        return generate_multimodal(self.model_cfg, self.params, rows, images, options)

    def text(self, ids) -> str:
        """The answer text: ids up to the first stop (eos) or pad."""
        eos = getattr(self.tokenizer, "eos_id", None)
        out = []
        for t in np.asarray(ids).tolist():
            if t < 0 or t == eos:
                break
            out.append(t)
        return self.tokenizer.decode(out)

    def answer(self, questions: Sequence[str], image_paths: Sequence[Sequence], options: GenerateOptions | None = None):
        """Answer texts, one per question, each about its own image files."""
        for q, paths in zip(questions, image_paths):
            image_io.place_images(q, len(paths))  # checked before any file is read
        images = [self.load_images(paths) for paths in image_paths]
        out = self.generate(questions, images, options or self.options())
        return [self.text(row) for row in out]


def load_vlm_run(workdir, *, step: int | None = None) -> VLMRun:
    """The run's config, model config, params ({"vit", "projector", "lm"}, unboxed) and tokenizer, restored
    read-only from its checkpoint (a VQA run keeps the LM's PEFT split and frozen sub-trees apart: they are
    recombined here as the task does)."""
    require_multimodal(workdir)
    workdir = as_path(workdir)
    config, base_cfg = read_run(workdir)
    method = peft.make_method(config.peft, config.train.num_steps)
    model_cfg = dataclasses.replace(base_cfg, lm=method.model_config(base_cfg.lm))
    state = load_state(workdir, base_cfg, models.get(FAMILY), step=step)
    parts = {**(state.get("frozen") or {}), **state["params"]}
    missing = [k for k in ("vit", "projector", "lm") if k not in parts]
    if missing:
        raise ValueError(
            f"the checkpoint in {workdir} has no {missing} sub-tree(s); is it a vqa run of the vlm family?"
        )
    lm = method.combine(parts["lm"], (state.get("frozen") or {}).get("lm_base") or {})
    params = {"vit": parts["vit"], "projector": parts["projector"], "lm": lm}
    return VLMRun(config, model_cfg, params, load_tokenizer(workdir))
