"""How far byte-wise entropy coding could shrink a quantized workdir's int8 arrays (the on-disk 4x question).

  python -m experiments.int8_entropy --workdir=W8

Prints one JSON line: the int8/uint8 bytes of the stored params, their order-0 entropy and their zlib-9 and
xz-9 sizes, each as a fraction of the raw bytes (results: experiments/results/compression.md, "Disk ratio").
"""

from __future__ import annotations

import argparse
import json
import lzma
import zlib

import jax
import numpy as np

from gpt_jax.workdir import load_run_at


def int_bytes(params) -> bytes:
    arrays = [np.asarray(a) for a in jax.tree.leaves(params)]
    return b"".join(a.tobytes() for a in arrays if a.dtype in (np.int8, np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="a workdir written by gpt_jax.compress quantize")
    params = load_run_at(ap.parse_args().workdir)[2]
    raw = int_bytes(params)
    if not raw:
        raise SystemExit("no int8/uint8 arrays in this workdir; pass one written by `gpt_jax.compress quantize`")
    p = np.bincount(np.frombuffer(raw, np.uint8), minlength=256) / len(raw)
    entropy_bits = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
    print(
        json.dumps(
            {
                "int_bytes": len(raw),
                "order0_entropy": round(entropy_bits / 8, 4),
                "zlib9": round(len(zlib.compress(raw, 9)) / len(raw), 4),
                "xz9": round(len(lzma.compress(raw, preset=9)) / len(raw), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
