"""Hugging Face GPT-2 <-> gpt_jax: config.json <-> ModelConfig, HF state dict <-> our params.

Only the GPT-2 architecture maps onto ours, so anything else is refused with one line naming the
file and the problem. The map (HF Conv1D weights are [in, out], like our kernels):

  wte.weight [V,D] -> wte            wpe.weight [P,D] -> wpe           lm_head.weight [V,D] -> lm_head [D,V] (untied)
  h.i.ln_1/ln_2, ln_f .weight/.bias -> h_i/ln_1, h_i/ln_2, ln_f .scale/.bias
  h.i.attn.c_attn.weight [D,3D]     -> h_i/attn/{query,key,value}/kernel [D,H,K]   (.bias [3D] -> bias [H,K])
  h.i.attn.c_proj.weight [D,D]      -> h_i/attn/out_kernel [H,K,D]                 (.bias -> out_bias)
  h.i.mlp.c_fc / c_proj .weight/.bias -> h_i/mlp/fc, h_i/mlp/proj .kernel/.bias
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from safetensors.numpy import save_file

from gpt_jax.config import ModelConfig
from gpt_jax.interop.hf_files import HFError, read_hf_weights, read_json
from gpt_jax.model import NO_EXTENSIONS, extensions_of, init_params

# HF activation names that are all the tanh-approximated GELU our MLP computes.
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# GPT2Config defaults, used where a config.json omits a key (as HF itself does).
HF_DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, layer_norm_epsilon=1e-5)

Params = dict[str, Any]


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
    if extensions_of(cfg) != NO_EXTENSIONS:
        raise HFError(
            f"the model carries extension modules ({extensions_of(cfg)}; adapters / prefix tuning), which have "
            "no GPT-2 equivalent; export the base model (or merge LoRA into it) instead"
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
    want = nn.meta.unbox(jax.eval_shape(lambda: init_params(cfg.replace(scan_layers=False), jax.random.key(0))))
    got_shapes = jax.tree.map(lambda x: tuple(x.shape), params)
    want_shapes = jax.tree.map(lambda x: tuple(x.shape), want)
    if got_shapes != want_shapes:
        raise AssertionError(
            f"gpt_jax.interop.hf_gpt2's GPT-2 map no longer matches gpt_jax.model's params: "
            f"{jax.tree_util.tree_structure(got_shapes)} vs {jax.tree_util.tree_structure(want_shapes)}"
        )


def _unstack_layers(cfg: ModelConfig, params: Params) -> Params:
    """scan_layers=True stores blocks stacked under h/block with a leading layer axis: split them."""
    if "h" not in params:
        return params
    out = {k: v for k, v in params.items() if k != "h"}
    for i in range(cfg.n_layer):
        out[f"h_{i}"] = jax.tree.map(lambda x: x[i], params["h"]["block"])  # noqa: B023 - called here, at once
    return out


def params_to_hf(cfg: ModelConfig, params: Params) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel state dict (float32 numpy) from our params (boxed or not, scanned or not)."""
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
