"""Sample text from a trained run, streamed to stdout as it is generated.

  python -m gpt_jax.sample --workdir=runs/shk_cpu --prompt="ROMEO:" [--max_new_tokens=200]
      [--temperature=0.8 --top_k=200 --top_p=0.95 --min_p=0.05 --repetition_penalty=1.1]
      [--num_beams=1 --num_samples=1 --seed=0 --stop=STRING --chunk=8] [--kv_int8]

--kv_int8 decodes with an int8 KV cache (gpt_jax.compression.kv_int8; GPT text runs with unstacked layers).

Defaults for temperature and top_k come from the run's config.sample. Past the model's block_size
(learned/sinusoidal positions) the window slides: the last block_size // 2 tokens are re-encoded.
A tokenizer with an `eos_id` stops there. With --num_samples > 1 the samples are generated as one
batch and printed one after another, separated by a line of dashes. Sentinel ids of the run's
objective (fim, mlm: ids past the tokenizer's vocabulary) are never sampled.

Multimodal runs (model.family='vlm', e.g. configs/multimodal/digits_vqa.py): a question about images,

  python -m gpt_jax.sample --workdir=W --image=digit.png --prompt="What digit is this?"
  python -m gpt_jax.sample --workdir=W --image=a.png --image=b.png --prompt="which is larger, the first or the second?"

--image is repeatable, one file per `<image>` placeholder of --prompt, in order; a prompt without any
placeholder gets one per image put before it (the training rows' layout). Files (PNG/JPEG, any size, grey or
colour) go through the run's own preprocessing (gpt_jax.data.image_io). Prints the answer, one line per
sample; greedy unless --temperature is given; stops at the tokenizer's <eos>. A text run given --image, or
a multimodal run given none, is a one-line error. Nothing is written to the workdir.

Image GAN runs (task.name='gan', e.g. configs/gan/mnist_dcgan.py): `--workdir=W [--num_samples=100
--seed=0]` writes a grid PNG of the EMA generator's images to W/sample_seed<seed>.png (digit c in column c).

Infilling (runs whose objective has the infilling sentinels, i.e. objective='fim'):

  python -m gpt_jax.sample --workdir=W --infill_prefix="But soft, what " --infill_suffix=" is the sun."

prompts `<PRE> prefix <SUF> suffix <MID>` and generates the middle until the EOT sentinel (or
max_new_tokens, capped to the room left in the block). Each sample prints two parts:
  the filled text, prefix + middle + suffix (as many lines as it has), then
  one line `middle: '<the middle as a Python string literal>'`, with ` (no EOT)` appended when the
  middle was cut by max_new_tokens before the model ended it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from gpt_jax import objectives, vlm_run
from gpt_jax import workdir as workdir_lib
from gpt_jax.analysis import gan_run
from gpt_jax.cli import flags
from gpt_jax.compression import kv_int8
from gpt_jax.data import image_io
from gpt_jax.generation.engine import generate
from gpt_jax.generation.options import GenerateOptions, undecodable_ids
from gpt_jax.generation.stream import stream
from gpt_jax.objectives.fim import infill_prompt, take_middle
from gpt_jax.safety import Safety

SEPARATOR = "-" * 40
ANSWER_TOKENS = 8  # a multimodal run's default --max_new_tokens: its answers are a few words and <eos>
MIDDLE = "middle: "  # the line that holds the infilled middle alone
INFILL_SENTINELS = frozenset({"PRE", "SUF", "MID", "EOT"})  # what infill_prompt and take_middle use


USAGE = 'usage: python -m gpt_jax.sample --workdir=W [--prompt="ROMEO:"] [--max_new_tokens=200] [--temperature=0.8 ...]'
SPEC = [
    flags.Flag("workdir", help="a run directory written by gpt_jax.main or gpt_jax.finetune", required=True),
    flags.Flag("prompt", str, "\n", "text to continue"),
    flags.Flag("max_new_tokens", int, None, "tokens to generate (default 200; a multimodal run's answers: 8)"),
    flags.Flag("temperature", float, None, "0 = greedy (default: the run's config.sample)"),
    flags.Flag("top_k", int, None, "keep the k most likely tokens (default: the run's config.sample)"),
    flags.Flag("top_p", float, None, "nucleus sampling"),
    flags.Flag("min_p", float, None, "drop tokens below min_p x the top probability"),
    flags.Flag("repetition_penalty", float, None, "HF/CTRL repetition penalty"),
    flags.Flag("num_beams", int, 1, "beam search width"),
    flags.Flag("num_samples", int, 1, "samples, generated as one batch"),
    flags.Flag("seed", int, 0, "sampling seed"),
    flags.Flag("stop", list, [], "stop string (repeatable)"),
    flags.Flag("chunk", int, 8, "decode steps per compiled call while streaming"),
    flags.Flag("infill_prefix", str, None, "fim runs: text before the gap (then --prompt is unused)"),
    flags.Flag("infill_suffix", str, None, "fim runs: text after the gap"),
    flags.Flag(
        "banned_words_file", str, None, "words/phrases and re:<regex> lines kept out of the text (gpt_jax.safety)"
    ),
    flags.Flag("redact_pii", bool, False, "redact e-mails, phone numbers and long ID-like numbers (gpt_jax.safety)"),
    flags.Flag(
        "image", list, [], "multimodal runs: an image file (PNG/JPEG), one per <image> in --prompt (repeatable)"
    ),
    flags.Flag("kv_int8", bool, False, "decode with an int8 KV cache (a quarter of the float32 cache's bytes)"),
]


def parse(argv: list[str]) -> argparse.Namespace:
    _, values = flags.parse(argv, SPEC, usage=USAGE)
    return argparse.Namespace(**values)


class TextStream:
    """Prints the new text of a growing id sequence; holds back a trailing partial UTF-8 character."""

    def __init__(self, decode, out=None):
        # sys.stdout looked up per stream, not bound at import (it may be swapped later, e.g. by pytest).
        self.decode, self.out, self.ids, self.shown = decode, out or sys.stdout, [], 0

    def add(self, ids) -> None:
        self.ids += [int(i) for i in ids if i >= 0]
        text = self.decode(self.ids).rstrip("\ufffd")
        self.out.write(text[self.shown :])
        self.out.flush()
        self.shown = max(self.shown, len(text))

    def close(self) -> None:
        self.out.write(self.decode(self.ids)[self.shown :] + "\n")
        self.out.flush()


def sampling_options(args: argparse.Namespace, config, **fixed) -> GenerateOptions:
    """The options of the flags (sampling and infilling); temperature/top_k default to the run's
    config.sample. `fixed`: the other fields (max_new_tokens, stop and banned ids, ...)."""
    sample_cfg = config.get("sample", {})
    temperature = args.temperature if args.temperature is not None else sample_cfg.get("temperature", 0.8)
    top_k = args.top_k if args.top_k is not None else sample_cfg.get("top_k", None)
    return GenerateOptions(
        temperature=temperature,
        top_k=top_k if args.num_beams == 1 else None,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        num_beams=args.num_beams,
        seed=args.seed,
        **fixed,
    )


def infill_objective(name: str, base_vocab: int):
    """The run's objective if it can infill (has the PRE/SUF/MID/EOT sentinels), else None."""
    objective = objectives.get(name, base_vocab)
    return objective if set(objective.sentinels) >= INFILL_SENTINELS else None


def run(args: argparse.Namespace) -> None:
    if args.kv_int8 and (args.image or vlm_run.is_multimodal(args.workdir) or gan_run.is_gan(args.workdir)):
        raise ValueError("--kv_int8 applies to GPT text runs (not multimodal or GAN runs): drop --kv_int8")
    if args.image or vlm_run.is_multimodal(args.workdir):  # --image on any other run is a one-line error there
        return answer_images(args)
    if gan_run.is_gan(args.workdir):  # an image GAN: a grid PNG (--num_samples images, 100 by default)
        n = args.num_samples if args.num_samples > 1 else 100
        return print(f"wrote {gan_run.sample_grid(args.workdir, n, args.seed)}")
    if args.max_new_tokens is None:
        args.max_new_tokens = 200
    if args.infill_prefix is not None or args.infill_suffix is not None:
        return infill(args)
    if args.prompt == "":
        raise ValueError('--prompt is empty; give at least one character (the default is "\\n")')
    if args.num_samples < 1:
        raise ValueError(f"--num_samples={args.num_samples} must be >= 1")
    safety = Safety.from_flags(args.banned_words_file, redact_pii=args.redact_pii)  # before the slow restore
    config, cfg, params, tok = workdir_lib.load_run(args.workdir)
    cfg = kv_int8.for_flag(cfg, args.kv_int8)
    eos = getattr(tok, "eos_id", None)
    if args.num_beams > 1 and args.stop:
        raise ValueError("--stop needs streaming; beam search stops at the tokenizer's eos only")
    # Streaming (no beams) slides past block_size and cuts at --stop; beam search takes neither.
    streaming = dict(chunk=args.chunk, slide=True, stop_strings=args.stop, decode=tok.decode)
    options = sampling_options(
        args,
        config,
        max_new_tokens=args.max_new_tokens,
        stop_ids=() if eos is None else (eos,),
        banned_ids=undecodable_ids(tok.vocab_size, cfg.vocab_size) + tuple(safety.banned_token_ids(tok.encode)),
        **({} if args.num_beams > 1 else streaming),
    )
    prompts = [tok.encode(args.prompt)] * args.num_samples
    if args.num_beams > 1:
        rows = generate(cfg, params, prompts, options)
    elif safety.active:  # the filter needs whole texts: each sample is printed once complete
        rows = [np.concatenate(r) for r in zip(*stream(cfg, params, prompts, options))]
    else:
        first = TextStream(tok.decode)  # the first sample is printed as it is produced
        sys.stdout.write(args.prompt)
        rows = [[] for _ in prompts]
        for chunk in stream(cfg, params, prompts, options):
            first.add(chunk[0])
            for row, ids in zip(rows, chunk):
                row.extend(ids)
        first.close()
        rows = rows[1:]
        if not rows:
            return
        print(SEPARATOR)
    for i, row in enumerate(rows):
        print(safety.apply(args.prompt + tok.decode([int(t) for t in row if t >= 0])))
        if i + 1 < len(rows):
            print(SEPARATOR)


def answer_images(args: argparse.Namespace) -> None:
    """A multimodal run's answer(s) to --prompt about the --image files (see the module docstring)."""
    vlm_run.require_multimodal(args.workdir)
    if not args.image:
        raise ValueError(f"{args.workdir} is a multimodal run: pass the picture(s) with --image=PATH")
    unused = [f"--{k}" for k in ("infill_prefix", "infill_suffix") if getattr(args, k) is not None]
    unused += ["--stop"] * bool(args.stop) + ["--num_beams"] * (args.num_beams > 1)
    if unused:
        raise ValueError(f"{', '.join(unused)} not used with --image; answers stop at <eos> (greedy or sampled)")
    if args.num_samples < 1:
        raise ValueError(f"--num_samples={args.num_samples} must be >= 1")
    image_io.place_images(args.prompt, len(args.image))  # before any file is read or the checkpoint restored
    safety = Safety.from_flags(args.banned_words_file, redact_pii=args.redact_pii)  # answers filtered like text
    run = vlm_run.load_vlm_run(args.workdir)
    images = run.load_images(args.image)
    prompt = run.prompt_ids(args.prompt, len(args.image))
    lm = run.model_cfg.lm
    asked = ANSWER_TOKENS if args.max_new_tokens is None else args.max_new_tokens
    room = asked if lm.pos == "rope" else min(asked, lm.block_size - len(prompt))
    if room < 1:
        raise ValueError(f"the prompt with its images is {len(prompt)} tokens, filling block_size={lm.block_size}")
    options = run.options(
        max_new_tokens=room,
        temperature=0.0 if args.temperature is None else args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    rows = run.generate([args.prompt] * args.num_samples, [images] * args.num_samples, options)
    for i, row in enumerate(rows):
        print(safety.apply(run.text(row)))
        if i + 1 < len(rows):
            print(SEPARATOR)


def infill(args: argparse.Namespace) -> None:
    """Fill the gap between --infill_prefix and --infill_suffix (see the module docstring)."""
    # Checked before the (slow) checkpoint restore; runs from before `objective` existed are causal.
    # Sentinel names do not depend on the tokenizer, so any base vocab serves for the check.
    objective = workdir_lib.read_run_file(args.workdir, "config.json").get("objective", "causal")
    if infill_objective(objective, 1) is None:
        raise ValueError(
            f"--infill_prefix/--infill_suffix need a run trained with objective='fim'; {args.workdir} was "
            f"trained with objective={objective!r} (train one with --config.objective=fim)"
        )
    if args.stop:
        raise ValueError("--stop is not used with infilling; the middle ends at the EOT sentinel")
    if args.num_samples < 1:
        raise ValueError(f"--num_samples={args.num_samples} must be >= 1")
    config, cfg, params, tok = workdir_lib.load_run(args.workdir)
    cfg = kv_int8.for_flag(cfg, args.kv_int8)
    infiller = infill_objective(objective, tok.vocab_size)
    s = infiller.sentinels
    if cfg.vocab_size < tok.vocab_size + infiller.extra_tokens:
        raise ValueError(
            f"model vocab_size={cfg.vocab_size} has no room for the {objective} sentinels after the tokenizer's "
            f"{tok.vocab_size} ids (needs >= {tok.vocab_size + infiller.extra_tokens}); "
            f"was it trained with objective={objective!r}?"
        )
    prefix, suffix = args.infill_prefix or "", args.infill_suffix or ""
    prompt = infill_prompt(tok.encode, prefix, suffix, s)
    n = args.max_new_tokens
    if cfg.pos != "rope":  # no sliding here: the window must keep <PRE> ... <MID>
        if len(prompt) >= cfg.block_size:
            raise ValueError(
                f"infill prompt is {len(prompt)} tokens with sentinels; block_size={cfg.block_size} leaves no room "
                "for the middle; shorten --infill_prefix/--infill_suffix"
            )
        n = min(n, cfg.block_size - len(prompt))
    options = sampling_options(
        args,
        config,
        max_new_tokens=n,
        stop_ids=(s["EOT"],),
        # Only text or EOT may follow <MID>: ban the other sentinels and any other id past the tokenizer.
        banned_ids=[t for t in undecodable_ids(tok.vocab_size, cfg.vocab_size) if t != s["EOT"]],
    )
    rows = generate(cfg, params, [prompt] * args.num_samples, options)
    for i, row in enumerate(rows):
        ids, ended = take_middle(row, s["EOT"])
        middle = tok.decode(ids)
        print(prefix + middle + suffix)
        print(MIDDLE + repr(middle) + ("" if ended else " (no EOT)"))
        if i + 1 < len(rows):
            print(SEPARATOR)


def main(argv: list[str]) -> int:
    return flags.run(lambda a: run(parse(a)) or 0, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
