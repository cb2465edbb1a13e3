"""What a run pays before its first step: the persistent compilation cache, the metric writer's imports,
and the MFU denominators (FLOPs per token, the CPU peak)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from configs.base import base_config
from gpt_jax import flops
from gpt_jax.config import ModelConfig
from tests.optional_deps import require

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, **env) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_second_process_loads_compiled_step_from_cache(tmp_path):
    code = f"""
    import jax, jax.numpy as jnp
    from jax import monitoring
    from configs.base import base_config
    from gpt_jax import run_config
    hits = []
    monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
    c = base_config(); c.train.compile_cache_dir = {str(tmp_path / "cache")!r}
    run_config.apply_compile_cache(c)
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    print(float(f(jnp.ones((64, 64)))), len(hits))
    """
    first = run_python(code).split()
    assert first[1] == "0" and any((tmp_path / "cache").iterdir())
    second = run_python(code).split()
    assert second[0] == first[0] and int(second[1]) >= 1  # same result, executable loaded not compiled


def test_compile_cache_off_when_empty(tmp_path):
    """compile_cache_dir="" turns the cache off even where one was on before (here JAX_COMPILATION_CACHE_DIR,
    as a user's shell may set it): a compile then writes nothing, neither there nor at the default
    ~/.cache path. The control process, same code without applying the config, writes cache files,
    so an empty folder means "off", not "nothing worth caching"."""
    code = """
    import jax, jax.numpy as jnp
    from configs.base import base_config
    from gpt_jax import run_config
    c = base_config(); c.train.compile_cache_dir = ""
    if APPLY:
        run_config.apply_compile_cache(c)
    jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))).block_until_ready()
    print(jax.config.jax_compilation_cache_dir)
    """
    procs = {}
    for apply in (False, True):
        home = tmp_path / f"home_{apply}"
        env = {
            **os.environ, "JAX_PLATFORMS": "cpu", "HOME": str(home),
            "JAX_COMPILATION_CACHE_DIR": str(tmp_path / f"cache_{apply}"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        }  # fmt: skip
        procs[apply] = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code).replace("APPLY", str(apply))],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    for apply, proc in procs.items():  # the two start together: one interpreter start's wait, not two
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        procs[apply] = out.strip().splitlines()[-1]
    cache_files = lambda apply: [p for p in (tmp_path / f"cache_{apply}").rglob("*") if p.is_file()]
    assert cache_files(False), "control: the environment's cache is on and this compile is cached"
    assert procs[True] == "None"
    assert cache_files(True) == []
    assert not [p for p in (tmp_path / "home_True").rglob("*") if p.is_file()]  # nor the default ~/.cache path


def test_metric_writer_does_not_import_torch(tmp_path):
    require("torch")  # installed with the HF oracle; tensorboardX imports it when it can
    code = f"""
    import sys
    from gpt_jax.metrics import MetricWriter
    with MetricWriter({str(tmp_path)!r}) as w:
        w.write(1, {{"train_loss": 1.0}})
    print("torch" in sys.modules)
    """
    assert run_python(code) == "False"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_task_head_flops_exclude_vocab_projection():
    cfg = ModelConfig(vocab_size=4096, block_size=64, n_layer=2, n_head=2, n_embd=32)
    with_head = flops.train_flops_per_token(cfg, 48)
    without = flops.train_flops_per_token(cfg, 48, lm_head=False)
    assert with_head - without == 3 * 2 * 32 * 4096


def test_cpu_peak_keeps_best_seen(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert flops._best_seen("cpu x2 float32", 100e9) == 100e9
    assert flops._best_seen("cpu x2 float32", 40e9) == 100e9  # a busy machine's low reading is not the peak
    assert flops._best_seen("cpu x2 float32", 150e9) == 150e9
    assert flops._best_seen("cpu x2 bfloat16", 90e9) == 90e9
    saved = json.loads((tmp_path / ".cache/gpt_jax/cpu_peak.json").read_text())
    assert saved == {"cpu x2 float32": 150e9, "cpu x2 bfloat16": 90e9}


def test_lm_task_counts_block_tokens_with_vocab_head():
    import numpy as np

    from gpt_jax.tasks.lm import LMTask

    c = base_config()
    c.train.batch_size = 2
    cfg = ModelConfig(vocab_size=65, block_size=64, n_layer=1, n_head=1, n_embd=8)
    toks = {"train": np.arange(1000) % 65, "validation": np.arange(200) % 65}
    task = LMTask(c, tokenizer=type("T", (), {"vocab_size": 65})(), tokens=toks, model_cfg=cfg)
    assert (task.seq_len, task.lm_head) == (64, True)
