"""Model compression: weight-only quantization (int8 / packed int4, absmax or GPTQ), magnitude pruning
(unstructured or 2:4, with a masked fine-tune) and the files of a compressed workdir.

`python -m gpt_jax.compress quantize|prune ...` (gpt_jax.cli.compress) writes a new workdir that loads
like any other (gpt_jax.workdir.load_run restores quantized params through `stored.restore_params`).
Distillation is a training task: gpt_jax.tasks.distill.
"""
