"""Attention heatmaps of a trained run on a prompt, one panel per layer and head:

python -m gpt_jax.attention_maps --workdir=W --prompt=TEXT [--out=attention.png] [--layers=0,1] [--heads=0]

Multimodal runs (model.family='vlm'): with --image (repeatable, one per <image> in --prompt, or none there:
one per image is put before it) the PNG shows each image with the answer's attention on its patches laid
over it, averaged over the chosen layers and heads (gpt_jax.analysis.image_attention):

python -m gpt_jax.attention_maps --workdir=W --image=digit.png --prompt="what digit is this?" --out=attn.png
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gpt_jax import vlm_run
from gpt_jax.analysis.attention_maps import prompt_maps
from gpt_jax.analysis.image_attention import image_maps
from gpt_jax.cli import flags

USAGE = "usage: python -m gpt_jax.attention_maps --workdir=W --prompt=TEXT --out=attn.png [--layers=0,1] [--heads=0]"
SPEC = [
    flags.Flag("workdir", help="a run's workdir (gpt_jax.main)", required=True),
    flags.Flag("prompt", help="text to look at", required=True),
    flags.Flag("out", str, "attention.png", "PNG to write"),
    flags.Flag("layers", help="comma list of layers (default all)"),
    flags.Flag("heads", help="comma list of heads (default all)"),
    flags.Flag("image", list, [], "multimodal runs: an image file (repeatable): draw the answer's attention on it"),
]


def int_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma list of integers; e.g. --layers=0,1") from None


def attention_maps(argv: Sequence[str]) -> int:
    _, v = flags.parse(argv, SPEC, usage=USAGE)
    layers, heads = int_list(v["layers"]), int_list(v["heads"])
    if v["image"] or vlm_run.is_multimodal(v["workdir"]):
        if not v["image"]:
            raise ValueError(f"{v['workdir']} is a multimodal run: pass the picture(s) with --image=PATH")
        maps = image_maps(v["workdir"], v["prompt"], v["image"], v["out"], layers, heads)
        mass = ", ".join(f"{100 * m:.1f}%" for m in maps.mass)
        print(f"answer: {maps.answer}\nattention on the image(s): {mass}\nwrote {v['out']}")
        return 0
    out = prompt_maps(v["workdir"], v["prompt"], v["out"], layers, heads)
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str]) -> int:
    return flags.run(attention_maps, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
