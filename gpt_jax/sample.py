"""Sample text from a trained run, streamed to stdout as it is generated.

  python -m gpt_jax.sample --workdir=runs/shk_cpu --prompt="ROMEO:" [--max_new_tokens=200]
      [--temperature=0.8 --top_k=200 --top_p=0.95 --min_p=0.05 --repetition_penalty=1.1]
      [--num_beams=1 --num_samples=1 --seed=0 --stop=STRING --chunk=8]

Defaults for temperature and top_k come from the run's config.sample. Past the model's block_size
(learned/sinusoidal positions) the window slides: the last block_size // 2 tokens are re-encoded.
A tokenizer with an `eos_id` stops there. With --num_samples > 1 the samples are generated as one
batch and printed one after another, separated by a line of dashes. Sentinel ids of the run's
objective (fim, mlm: ids past the tokenizer's vocabulary) are never sampled.

Infilling (runs trained with objective='fim' only):

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

SEPARATOR = "-" * 40
MIDDLE = "middle: "  # the line that holds the infilled middle alone


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gpt_jax.sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--top_k", type=int, default=None)
    p.add_argument("--top_p", type=float, default=None)
    p.add_argument("--min_p", type=float, default=None)
    p.add_argument("--repetition_penalty", type=float, default=None)
    p.add_argument("--num_beams", type=int, default=1)
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--chunk", type=int, default=8, help="decode steps per compiled call while streaming")
    p.add_argument("--infill_prefix", default=None, help="fim runs: text before the gap (then --prompt is unused)")
    p.add_argument("--infill_suffix", default=None, help="fim runs: text after the gap")
    return p.parse_args(argv)


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


def sampling_options(args: argparse.Namespace, config, **fixed) -> dict:
    """generate()/stream() keywords from the flags; temperature/top_k default to the run's config.sample."""
    sample_cfg = config.get("sample", {})
    temperature = args.temperature if args.temperature is not None else sample_cfg.get("temperature", 0.8)
    top_k = args.top_k if args.top_k is not None else sample_cfg.get("top_k", None)
    return dict(
        temperature=temperature,
        top_k=top_k if args.num_beams == 1 else None,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        **fixed,
    )


def run(args: argparse.Namespace) -> None:
    from gpt_jax import generate as gen
    from gpt_jax.workdir import load_run

    if args.infill_prefix is not None or args.infill_suffix is not None:
        return infill(args)
    if args.prompt == "":
        raise ValueError('--prompt is empty; give at least one character (the default is "\\n")')
    if args.num_samples < 1:
        raise ValueError(f"--num_samples={args.num_samples} must be >= 1")
    config, cfg, params, tok = load_run(args.workdir)
    eos = getattr(tok, "eos_id", None)
    kw = sampling_options(
        args,
        config,
        max_new_tokens=args.max_new_tokens,
        stop_ids=[eos] if eos is not None else [],
        # ids past the tokenizer (an objective's sentinels, vocab padding) cannot be decoded: never sample them.
        banned_ids=list(range(tok.vocab_size, cfg.vocab_size)),
    )
    prompts = [tok.encode(args.prompt)] * args.num_samples
    if args.num_beams > 1:
        if args.stop:
            raise ValueError("--stop needs streaming; beam search stops at the tokenizer's eos only")
        rows = gen.generate(cfg, params, prompts, num_beams=args.num_beams, **kw)
    else:
        first = TextStream(tok.decode)  # the first sample is printed as it is produced
        sys.stdout.write(args.prompt)
        rows = [[] for _ in prompts]
        for chunk in gen.stream(
            cfg, params, prompts, chunk=args.chunk, slide=True, stop_strings=args.stop, decode=tok.decode, **kw
        ):
            first.add(chunk[0])
            for row, ids in zip(rows, chunk):
                row.extend(ids)
        first.close()
        rows = rows[1:]
        if not rows:
            return
        print(SEPARATOR)
    for i, row in enumerate(rows):
        print(args.prompt + tok.decode([int(t) for t in row if t >= 0]))
        if i + 1 < len(rows):
            print(SEPARATOR)


def infill(args: argparse.Namespace) -> None:
    """Fill the gap between --infill_prefix and --infill_suffix (see the module docstring)."""
    from gpt_jax import generate as gen
    from gpt_jax import objectives
    from gpt_jax.objectives.fim import infill_prompt, take_middle
    from gpt_jax.workdir import load_run, read_run_file

    # Checked before the (slow) checkpoint restore; runs from before `objective` existed are causal.
    objective = read_run_file(args.workdir, "config.json").get("objective", "causal")
    if objective != "fim":
        raise ValueError(
            f"--infill_prefix/--infill_suffix need a run trained with objective='fim'; {args.workdir} was "
            f"trained with objective={objective!r} (train one with --config.objective=fim)"
        )
    if args.stop:
        raise ValueError("--stop is not used with infilling; the middle ends at the EOT sentinel")
    if args.num_samples < 1:
        raise ValueError(f"--num_samples={args.num_samples} must be >= 1")
    config, cfg, params, tok = load_run(args.workdir)
    fim = objectives.get("fim", tok.vocab_size)
    s = fim.sentinels
    if cfg.vocab_size < tok.vocab_size + fim.extra_tokens:
        raise ValueError(
            f"model vocab_size={cfg.vocab_size} has no room for the fim sentinels after the tokenizer's "
            f"{tok.vocab_size} ids (needs >= {tok.vocab_size + fim.extra_tokens}); was it trained with objective='fim'?"
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
    kw = sampling_options(
        args,
        config,
        max_new_tokens=n,
        stop_ids=[s["EOT"]],
        # Only text or EOT may follow <MID>: ban the other sentinels and any other id past the tokenizer.
        banned_ids=[t for t in range(tok.vocab_size, cfg.vocab_size) if t != s["EOT"]],
    )
    rows = gen.generate(cfg, params, [prompt] * args.num_samples, num_beams=args.num_beams, **kw)
    for i, row in enumerate(rows):
        ids, ended = take_middle(row, s["EOT"])
        middle = tok.decode(ids)
        print(prefix + middle + suffix)
        print(MIDDLE + repr(middle) + ("" if ended else " (no EOT)"))
        if i + 1 < len(rows):
            print(SEPARATOR)


def main(argv: list[str]) -> int:
    args = parse(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
