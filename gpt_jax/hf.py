"""Hugging Face GPT-2 <-> gpt_jax: weights, configs and tokenizers, as functions and a CLI.

  python -m gpt_jax.hf import --hf_dir=D --workdir=W [--tokenizer=PATH] [--seed=0]
  python -m gpt_jax.hf export --workdir=W --hf_dir=D

`import` turns a local HF GPT-2 folder (config.json + model.safetensors or pytorch_model.bin, plus
GPT-2's vocab.json + merges.txt or a tokenizer.json) of any size into a workdir that evaluation,
sampling and fine-tuning start from: config.json/model_config.json as gpt_jax.main writes them,
tokenizer.json, and a step-0 Orbax checkpoint. `export` writes a workdir's latest checkpoint as a
folder that `transformers.GPT2LMHeadModel.from_pretrained` loads. Nothing is downloaded.

Only the GPT-2 architecture maps onto ours, so anything else is refused with one line naming the
file and the problem. The map (HF Conv1D weights are [in, out], like our kernels):

  wte.weight [V,D] -> wte            wpe.weight [P,D] -> wpe           lm_head.weight [V,D] -> lm_head [D,V] (untied)
  h.i.ln_1/ln_2, ln_f .weight/.bias -> h_i/ln_1, h_i/ln_2, ln_f .scale/.bias
  h.i.attn.c_attn.weight [D,3D]     -> h_i/attn/{query,key,value}/kernel [D,H,K]   (.bias [3D] -> bias [H,K])
  h.i.attn.c_proj.weight [D,D]      -> h_i/attn/out_kernel [H,K,D]                 (.bias -> out_bias)
  h.i.mlp.c_fc / c_proj .weight/.bias -> h_i/mlp/fc, h_i/mlp/proj .kernel/.bias
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Any

import numpy as np

from gpt_jax.config import ModelConfig

# HF activation names that are all the tanh-approximated GELU our MLP computes.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# GPT2Config defaults, used where a config.json omits a key (as HF itself does).
HF_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, layer_norm_epsilon=1e-5)
# Non-weight buffers that older GPT-2 checkpoints carry (the causal mask), skipped on import.
_BUFFERS = (".attn.bias", ".attn.masked_bias")

Params = dict[str, Any]


class HFError(ValueError):
    """A one-line problem with an HF folder or a workdir (names the file and the fix)."""


# --- config ------------------------------------------------------------------------------------


def read_json(path: pathlib.Path) -> dict[str, Any]:
    if not path.is_file():
        raise HFError(f"{path} not found; expected an HF GPT-2 folder (config.json + model.safetensors)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFError(f"{path} is not valid JSON ({e}); the file is truncated or corrupt") from None
    if not isinstance(data, dict):
        raise HFError(f"{path} is not a JSON object")
    return data


def model_config_from_hf(hf: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """ModelConfig of an HF GPT2Config dict; anything GPT-2 options our model cannot compute is refused."""
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        raise HFError(
            f"{where}: model_type={model_type!r} is not 'gpt2'; gpt_jax can only represent the GPT-2 architecture"
        )
    act = hf.get("activation_function", "gelu_new")
    if act not in TANH_GELUS:
        raise HFError(
            f"{where}: activation_function={act!r} is unsupported; gpt_jax's GPT-2 MLP is the tanh GELU "
            f"({', '.join(TANH_GELUS)})"
        )
    # reorder_and_upcast_attn is accepted: it only reorders/upcasts math that we do in float32 anyway.
    for key, want in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if bool(hf.get(key, want)) != want:
            raise HFError(f"{where}: {key}={hf[key]!r} is unsupported; gpt_jax's GPT-2 attention needs {key}={want}")
    get = lambda key: hf.get(key, HF_DEFAULTS.get(key))  # noqa: E731
    try:
        return ModelConfig(
            vocab_size=int(get("vocab_size")),
            block_size=int(get("n_positions")),
            n_layer=int(get("n_layer")),
            n_head=int(get("n_head")),
            n_embd=int(get("n_embd")),
            d_ff=int(hf["n_inner"]) if hf.get("n_inner") else None,
            norm_eps=float(get("layer_norm_epsilon")),
            dropout=float(hf.get("resid_pdrop", 0.1)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        )
    except (TypeError, ValueError) as e:
        raise HFError(f"{where}: {e}") from None


def check_exportable(cfg: ModelConfig) -> None:
    """GPT-2 has biases, LayerNorm, learned positions, a GELU MLP and one K/V head per query head."""
    wanted = dict(bias=True, norm="layernorm", pos="learned", mlp="gelu")
    for field, want in wanted.items():
        if getattr(cfg, field) != want:
            raise HFError(
                f"model.{field}={getattr(cfg, field)!r} has no GPT-2 equivalent (GPT-2 needs {field}={want!r}); "
                "only runs with the GPT-2 layout can be exported"
            )
    if cfg.kv_heads != cfg.n_head:
        raise HFError(
            f"model.n_kv_head={cfg.n_kv_head} (grouped-query attention) has no GPT-2 equivalent; "
            "only runs with n_kv_head unset can be exported"
        )
    for field in ("adapter_dim", "prefix_len"):
        if getattr(cfg, field):
            raise HFError(
                f"model.{field}={getattr(cfg, field)} (adapters / prefix tuning) has no GPT-2 equivalent; "
                "export the base model (or merge LoRA into it) instead"
            )


def hf_config_from(cfg: ModelConfig, eos_id: int | None = None) -> dict[str, Any]:
    """config.json for transformers' GPT2LMHeadModel (written without needing transformers)."""
    check_exportable(cfg)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.d_ff,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": 0.0,  # our attention has no dropout on the probabilities
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "use_cache": True,
        # Explicit: GPT2Config would otherwise default both to 50256, out of range for small vocabs.
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "dtype": "float32",
    }


# --- weights -----------------------------------------------------------------------------------


def _weight_files(hf_dir: pathlib.Path) -> tuple[str, list[pathlib.Path]]:
    """('safetensors' | 'torch', files) of an HF folder, sharded (*.index.json) or not."""
    for kind, single, index in (
        ("safetensors", "model.safetensors", "model.safetensors.index.json"),
        ("torch", "pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (hf_dir / single).is_file():
            return kind, [hf_dir / single]
        if (hf_dir / index).is_file():
            weight_map = read_json(hf_dir / index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise HFError(f"{hf_dir / index} has no weight_map; the index file is corrupt")
            files = [hf_dir / name for name in sorted(set(weight_map.values()))]
            for f in files:
                if not f.is_file():
                    raise HFError(f"{f} not found, but {index} lists it; copy every shard of the model")
            return kind, files
    raise HFError(f"{hf_dir} has no model.safetensors or pytorch_model.bin; save the model with save_pretrained")


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so bf16 checkpoints read too)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys() if not k.endswith(_BUFFERS)}
    except Exception as e:  # SafetensorError, OSError
        raise HFError(
            f"{path}: cannot read safetensors ({e}); the file is truncated or corrupt, copy it again"
        ) from None


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise HFError(
            f'{path} is a PyTorch pickle and reading it needs torch (pip install -e ".[hf]"), '
            "or save the model as model.safetensors"
        ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip/pickle/unpickler errors of a bad file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HFError(f"{path}: cannot read PyTorch weights ({msg}); the file is truncated or corrupt") from None
    if not isinstance(state, dict):
        raise HFError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {
        k: v.detach().to(torch.float32).numpy()
        for k, v in state.items()
        if not k.endswith(_BUFFERS) and getattr(v, "is_floating_point", lambda: False)()
    }


def read_hf_weights(hf_dir: str | pathlib.Path) -> tuple[dict[str, np.ndarray], str]:
    """({name: array} without the 'transformer.' prefix or mask buffers, a description for errors)."""
    hf_dir = pathlib.Path(hf_dir)
    kind, files = _weight_files(hf_dir)
    read = _read_safetensors if kind == "safetensors" else _read_torch
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(read(f))
    where = str(files[0]) if len(files) == 1 else f"{hf_dir} ({len(files)} {kind} shards)"
    return {k.removeprefix("transformer."): v for k, v in tensors.items()}, where


def hf_to_params(cfg: ModelConfig, tensors: dict[str, np.ndarray], where: str) -> Params:
    """Our param tree (float32 numpy) from GPT-2 tensors named as in GPT2Model ('h.0.attn.c_attn.weight')."""
    d, h, k, f = cfg.n_embd, cfg.n_head, cfg.head_dim, cfg.ff_dim
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise HFError(
                f"{where}: no tensor {name!r} (config.json: n_layer={cfg.n_layer}, n_embd={d}); "
                "the weights do not belong to this config.json"
            )
        x = tensors[name]
        if tuple(x.shape) != shape:
            raise HFError(
                f"{where}: {name} has shape {tuple(x.shape)} but config.json implies {shape}; "
                "the weights do not belong to this config.json"
            )
        used.add(name)
        return np.ascontiguousarray(x, dtype=np.float32)

    def norm(prefix: str) -> Params:
        return {"scale": take(f"{prefix}.weight", (d,)), "bias": take(f"{prefix}.bias", (d,))}

    params: Params = {
        "wte": take("wte.weight", (cfg.vocab_size, d)),
        "wpe": take("wpe.weight", (cfg.block_size, d)),
    }
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        qkv_Dx3D = take(p + "attn.c_attn.weight", (d, 3 * d))
        qkv_bias_3D = take(p + "attn.c_attn.bias", (3 * d,))
        # HF splits the fused output into q | k | v, then each D into (heads, head_dim).
        heads = {
            name: {
                "kernel": np.ascontiguousarray(w_DxD.reshape(d, h, k)),
                "bias": np.ascontiguousarray(b_D.reshape(h, k)),
            }
            for name, w_DxD, b_D in zip(
                ("query", "key", "value"), np.split(qkv_Dx3D, 3, axis=1), np.split(qkv_bias_3D, 3)
            )
        }
        params[f"h_{i}"] = {
            "ln_1": norm(p + "ln_1"),
            "attn": {
                **heads,
                "out_kernel": take(p + "attn.c_proj.weight", (d, d)).reshape(h, k, d),  # rows are (head, k)
                "out_bias": take(p + "attn.c_proj.bias", (d,)),
            },
            "ln_2": norm(p + "ln_2"),
            "mlp": {
                "fc": {"kernel": take(p + "mlp.c_fc.weight", (d, f)), "bias": take(p + "mlp.c_fc.bias", (f,))},
                "proj": {"kernel": take(p + "mlp.c_proj.weight", (f, d)), "bias": take(p + "mlp.c_proj.bias", (d,))},
            },
        }
    params["ln_f"] = norm("ln_f")
    if cfg.tie_embeddings:
        used.add("lm_head.weight")  # saved by some writers although tied; HF ignores it too
    else:
        params["lm_head"] = np.ascontiguousarray(take("lm_head.weight", (cfg.vocab_size, d)).T)
    extra = sorted(set(tensors) - used)
    if extra:
        raise HFError(
            f"{where}: unexpected tensors {extra[:3]}{' ...' if len(extra) > 3 else ''} for config.json's "
            f"n_layer={cfg.n_layer}; the weights do not belong to this config.json"
        )
    _check_layout(cfg, params)
    return params


def _check_layout(cfg: ModelConfig, params: Params) -> None:
    """Same tree and shapes as GPT(cfg) creates (guards this map against model changes)."""
    import flax.linen as nn
    import jax

    from gpt_jax.model import init_params

    want = nn.meta.unbox(jax.eval_shape(lambda: init_params(cfg.replace(scan_layers=False), jax.random.key(0))))
    got_shapes = jax.tree.map(lambda x: tuple(x.shape), params)
    want_shapes = jax.tree.map(lambda x: tuple(x.shape), want)
    if got_shapes != want_shapes:
        raise AssertionError(
            f"gpt_jax.hf's GPT-2 map no longer matches gpt_jax.model's params: "
            f"{jax.tree_util.tree_structure(got_shapes)} vs {jax.tree_util.tree_structure(want_shapes)}"
        )


def _unstack_layers(cfg: ModelConfig, params: Params) -> Params:
    """scan_layers=True stores blocks stacked under h/block with a leading layer axis: split them."""
    if "h" not in params:
        return params
    import jax

    out = {k: v for k, v in params.items() if k != "h"}
    for i in range(cfg.n_layer):
        out[f"h_{i}"] = jax.tree.map(lambda x: x[i], params["h"]["block"])
    return out


def params_to_hf(cfg: ModelConfig, params: Params) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel state dict (float32 numpy) from our params (boxed or not, scanned or not)."""
    import flax.linen as nn
    import jax

    check_exportable(cfg)
    p = jax.tree.map(lambda x: np.asarray(jax.device_get(x), dtype=np.float32), nn.meta.unbox(params))
    p = _unstack_layers(cfg, p)
    d = cfg.n_embd
    out = {"transformer.wte.weight": p["wte"], "transformer.wpe.weight": p["wpe"]}
    for i in range(cfg.n_layer):
        b, pre = p[f"h_{i}"], f"transformer.h.{i}."
        a = b["attn"]
        out[pre + "ln_1.weight"], out[pre + "ln_1.bias"] = b["ln_1"]["scale"], b["ln_1"]["bias"]
        out[pre + "attn.c_attn.weight"] = np.concatenate(
            [a[n]["kernel"].reshape(d, d) for n in ("query", "key", "value")], 1
        )
        out[pre + "attn.c_attn.bias"] = np.concatenate([a[n]["bias"].reshape(d) for n in ("query", "key", "value")])
        out[pre + "attn.c_proj.weight"] = a["out_kernel"].reshape(d, d)
        out[pre + "attn.c_proj.bias"] = a["out_bias"]
        out[pre + "ln_2.weight"], out[pre + "ln_2.bias"] = b["ln_2"]["scale"], b["ln_2"]["bias"]
        out[pre + "mlp.c_fc.weight"], out[pre + "mlp.c_fc.bias"] = b["mlp"]["fc"]["kernel"], b["mlp"]["fc"]["bias"]
        out[pre + "mlp.c_proj.weight"], out[pre + "mlp.c_proj.bias"] = (
            b["mlp"]["proj"]["kernel"],
            b["mlp"]["proj"]["bias"],
        )
    out["transformer.ln_f.weight"], out["transformer.ln_f.bias"] = p["ln_f"]["scale"], p["ln_f"]["bias"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = p["lm_head"].T
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


# --- public API --------------------------------------------------------------------------------


def load_gpt2(hf_dir: str | pathlib.Path) -> tuple[ModelConfig, Params]:
    """(ModelConfig, params) of a local HF GPT-2 folder; `GPT(cfg).apply({'params': params}, ids)` gives
    its logits. Params are float32 numpy arrays (whatever the file's dtype)."""
    hf_dir = pathlib.Path(hf_dir)
    cfg = model_config_from_hf(read_json(hf_dir / "config.json"), str(hf_dir / "config.json"))
    tensors, where = read_hf_weights(hf_dir)
    return cfg, hf_to_params(cfg, tensors, where)


def save_gpt2(model_config: ModelConfig, params: Params, hf_dir: str | pathlib.Path, tokenizer=None) -> list[str]:
    """Write config.json + model.safetensors (+ the tokenizer's HF files if it is a BPE one) that
    `transformers.GPT2LMHeadModel.from_pretrained(hf_dir)` loads. Returns the files written."""
    from safetensors.numpy import save_file

    hf_dir = pathlib.Path(hf_dir)
    tensors = params_to_hf(model_config, params)
    hf_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})  # 'pt': what HF expects
    eos_id = getattr(tokenizer, "eos_id", None)
    config = hf_config_from(model_config, eos_id)
    (hf_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    written = ["config.json", "model.safetensors"]
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(hf_dir, model_max_length=model_config.block_size)
        written += ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"]
    return written


# --- workdirs ----------------------------------------------------------------------------------


def run_config_for(cfg: ModelConfig, seed: int = 0):
    """The base run config with `cfg` written into config.model (and the BPE tokenizer)."""
    _ensure_configs_importable()
    from configs.base import base_config

    config = base_config()
    config.seed = seed
    for field in dataclasses.fields(ModelConfig):
        if field.name in config.model:
            config.model[field.name] = getattr(cfg, field.name)
    config.data.tokenizer = "bpe"
    return config


def _ensure_configs_importable() -> None:
    # `configs` sits beside the package in a checkout and is not installed.
    root = str(pathlib.Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)


def _host_mesh():
    """One host CPU device: converting weights needs no accelerator memory (any size fits in RAM)."""
    import jax

    from gpt_jax import sharding as shd

    try:
        devices = jax.devices("cpu")[:1]
    except RuntimeError:  # JAX_PLATFORMS without cpu
        devices = jax.devices()[:1]
    return shd.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=devices)


def import_workdir(
    hf_dir: str | pathlib.Path,
    workdir: str | pathlib.Path,
    *,
    tokenizer_path: str | pathlib.Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """An HF GPT-2 folder -> a gpt_jax workdir (configs, tokenizer.json, step-0 checkpoint)."""
    import jax
    import jax.numpy as jnp

    from gpt_jax import run_config
    from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
    from gpt_jax.data.tokenizers import BPETokenizer
    from gpt_jax.optim import make_optimizer
    from gpt_jax.train import TrainState, state_shardings
    from gpt_jax.trainer import build_model_config

    hf_dir, workdir = pathlib.Path(hf_dir), pathlib.Path(workdir)
    if (workdir / "config.json").exists() or checkpoint_dir(workdir).exists():
        raise HFError(f"{workdir} already holds a run; pass a new --workdir")
    cfg, params = load_gpt2(hf_dir)
    tokenizer = BPETokenizer.from_pretrained(tokenizer_path or hf_dir)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise HFError(
            f"the tokenizer has {tokenizer.vocab_size} ids but {hf_dir / 'config.json'} has vocab_size="
            f"{cfg.vocab_size}; they belong to different models"
        )
    config = run_config_for(cfg, seed)
    model_cfg = build_model_config(config, tokenizer.vocab_size)
    assert model_cfg == cfg, (model_cfg, cfg)  # the workdir's config rebuilds exactly this model
    run_config.check_and_save(workdir, config, dataclasses.asdict(model_cfg))
    tokenizer.save(workdir)

    # The full TrainState that trainer.restore_or_init and gpt_jax.evaluate restore: fresh optimizer
    # state for config.optim, step 0, and the train rng create_train_state would derive from the seed.
    # Built on one host CPU device (no accelerator memory needed, and Orbax writes one copy fast);
    # restoring reshards it onto whatever mesh the run uses.
    mesh = _host_mesh()
    tx, _ = make_optimizer(config.optim, config.train.num_steps)
    _, shardings = state_shardings(cfg, tx, mesh)
    params = jax.device_put(params, shardings.params)
    state = TrainState(
        step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
        params=params,
        opt_state=jax.jit(tx.init, out_shardings=shardings.opt_state)(params),
        rng=jax.device_put(jax.random.split(jax.random.key(seed))[1], shardings.rng),
    )
    ckpt = Checkpointer(checkpoint_dir(workdir), save_every=0, keep=config.checkpoint.keep, async_save=False)
    try:
        ckpt.maybe_save(0, state, {"step": 0, "seed": seed, "imported_from": str(hf_dir.resolve())}, force=True)
    finally:
        ckpt.close()
    return {"workdir": str(workdir), "model": dataclasses.asdict(cfg), "tokenizer_vocab": tokenizer.vocab_size}


def export_workdir(workdir: str | pathlib.Path, hf_dir: str | pathlib.Path) -> dict[str, Any]:
    """A gpt_jax workdir's latest checkpoint -> an HF GPT-2 folder."""
    from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
    from gpt_jax.workdir import load_run, read_run_file

    workdir = pathlib.Path(workdir)
    check_exportable(ModelConfig(**read_run_file(workdir, "model_config.json")))  # before the (slow) restore
    ckpt = Checkpointer(checkpoint_dir(workdir), save_every=0, read_only=True)
    step = ckpt.latest_step()  # None: load_run says there is no checkpoint
    ckpt.close()
    _, cfg, params, tokenizer = load_run(workdir, step=step, mesh=_host_mesh())
    written = save_gpt2(cfg, params, hf_dir, tokenizer)
    result = {"hf_dir": str(hf_dir), "step": step, "files": written}
    if not hasattr(tokenizer, "save_pretrained"):
        result["note"] = f"the {tokenizer.name!r} tokenizer has no HF equivalent; only the model was exported"
    return result


# --- CLI ---------------------------------------------------------------------------------------

USAGE = (
    "usage: python -m gpt_jax.hf import --hf_dir=D --workdir=W [--tokenizer=PATH] [--seed=N]\n"
    "       python -m gpt_jax.hf export --workdir=W --hf_dir=D"
)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("import", "export"):
        print(USAGE, file=sys.stderr)
        return 2
    command, flags = argv[0], {}
    for arg in argv[1:]:
        if not arg.startswith("--") or "=" not in arg:
            print(f"error: cannot parse argument {arg!r}; use --name=value\n{USAGE}", file=sys.stderr)
            return 2
        name, value = arg[2:].split("=", 1)
        flags[name] = value
    allowed = {"hf_dir", "workdir"} | ({"tokenizer", "seed"} if command == "import" else set())
    unknown, missing = sorted(set(flags) - allowed), sorted({"hf_dir", "workdir"} - set(flags))
    if unknown or missing:
        what = f"unknown flag(s) {unknown}" if unknown else f"missing --{' --'.join(missing)}"
        print(f"error: {what}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if command == "import":
            result = import_workdir(
                flags["hf_dir"], flags["workdir"], tokenizer_path=flags.get("tokenizer"), seed=int(flags.get("seed", 0))
            )
            result.pop("model")
        else:
            result = export_workdir(flags["workdir"], flags["hf_dir"])
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
