"""Pretraining objectives (gpt_jax.objectives): batch shapes and determinism for every objective,
causal == TokenBatcher, FIM layout (sentinels, rate, recoverable middle), MLM's 15% and 80/10/10,
prefix LM's weights and attention mask, no target ever visible to the position that predicts it,
infill prompts and the sample CLI's --infill_prefix/--infill_suffix.

The last test trains a FIM run end to end through the lead's LM task (gpt_jax/tasks/lm.py) and
samples from it; it also needs trainer.sample_text to ban the sentinel ids, and fails until it does.
"""

from __future__ import annotations

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gpt_jax import masks, objectives
from gpt_jax.config import ModelConfig
from gpt_jax.data.batches import TokenBatcher
from gpt_jax.objectives.fim import infill_prompt, split_fim_row, take_middle

V = 61  # base vocabulary of the synthetic windows
NAMES = sorted(objectives.OBJECTIVES)


def windows(k=3, b=4, length=32, vocab=V, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (k, b, length + 1)).astype(np.int32)


def batch_of(name, w, seed=0, **options):
    return objectives.get(name, V, **options).make_batch(w, np.random.default_rng([seed, 1]))


# ----------------------------------------------------------------------------- registry, shapes, determinism


def test_get_unknown_objective_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown objective 'ul2'.*causal.*fim.*mlm.*prefix_lm") as e:
        objectives.get("ul2", V)
    assert "\n" not in str(e.value)
    assert set(NAMES) == {"causal", "fim", "mlm", "prefix_lm"}


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_id_range(name):
    obj = objectives.get(name, V)
    assert obj.name == name and len(obj.sentinels) == obj.extra_tokens
    assert sorted(obj.sentinels.values()) == list(range(V, V + obj.extra_tokens))
    w = windows()
    before = w.copy()
    batch = obj.make_batch(w, np.random.default_rng(0))
    np.testing.assert_array_equal(w, before)  # the windows are not modified in place
    expected = {"inputs", "targets", "weights"} | ({"prefix_len"} if name in ("mlm", "prefix_lm") else set())
    assert set(batch) == expected
    for key in ("inputs", "targets", "weights"):
        assert batch[key].shape == (3, 4, 32), key
    assert batch["inputs"].dtype == batch["targets"].dtype == np.int32 and batch["weights"].dtype == np.float32
    if "prefix_len" in batch:
        assert batch["prefix_len"].shape == (3, 4) and batch["prefix_len"].dtype == np.int32
    for key in ("inputs", "targets"):
        assert batch[key].min() >= 0 and batch[key].max() < V + obj.extra_tokens


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_rng_seed(name):
    w = windows(k=4, b=8)
    a, b, c = batch_of(name, w, seed=3), batch_of(name, w, seed=3), batch_of(name, w, seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    if name != "causal":  # causal draws nothing
        assert any(not np.array_equal(a[key], c[key]) for key in a)


@pytest.mark.parametrize("name, width", [("causal", 1), ("fim", 4), ("mlm", 1), ("prefix_lm", 2)])
def test_too_short_windows_are_a_one_line_error(name, width):
    with pytest.raises(ValueError, match="block_size") as e:
        objectives.get(name, V).make_batch(np.zeros((1, 1, width), np.int32), np.random.default_rng(0))
    assert "\n" not in str(e.value)


def test_causal_equals_token_batcher_inputs_and_targets():
    tokens = np.random.default_rng(1).integers(0, V, 500)
    batcher = TokenBatcher(tokens, batch_size=6, block_size=16, seed=2)
    old = batcher.batches(5, 3)
    start_KxB = np.stack([batcher.offsets(s) for s in range(5, 8)])
    w = tokens[start_KxB[..., None] + np.arange(17)].astype(np.int32)  # the windows TokenBatcher gathers
    new = objectives.get("causal", V).make_batch(w, np.random.default_rng(0))
    np.testing.assert_array_equal(new["inputs"], old["inputs"])
    np.testing.assert_array_equal(new["targets"], old["targets"])
    assert (new["weights"] == 1).all()


# ----------------------------------------------------------------------------- fim


def fim_rows(w, seed=0, **options):
    """(rows [K, B, L+1] rebuilt from inputs/targets, the objective)."""
    obj = objectives.get("fim", V, **options)
    batch = obj.make_batch(w, np.random.default_rng(seed))
    np.testing.assert_array_equal(batch["inputs"][..., 1:], batch["targets"][..., :-1])  # a shifted row
    assert (batch["weights"] == 1).all()  # the paper trains on every token
    return np.concatenate([batch["inputs"], batch["targets"][..., -1:]], -1), obj


@pytest.mark.parametrize("spm_rate", [0.0, 0.5, 1.0])
def test_fim_rows_are_plain_or_a_rearranged_document(spm_rate):
    """Plain rows are the window; FIM rows hold each sentinel once, PRE first and EOT last, the
    document's tokens rearranged (PSM: exactly <PRE> doc[:i] <SUF> doc[j:] <MID> doc[i:j] <EOT>;
    SPM: <PRE> <SUF> doc[j:] <MID> doc[:j] <EOT>), and prefix + middle + suffix gives the document back."""
    w = windows(k=8, b=16, length=24)
    rows, obj = fim_rows(w, spm_rate=spm_rate)
    s = obj.sentinels
    d = w.shape[-1] - 4  # the document: the window's first L-3 tokens
    n_fim = n_suf_first = 0
    for row, win in zip(rows.reshape(-1, rows.shape[-1]), w.reshape(-1, w.shape[-1])):
        parts = split_fim_row(row, s)
        if parts is None:  # plain: the window unchanged, no sentinel
            np.testing.assert_array_equal(row, win)
            continue
        n_fim += 1
        for name in ("PRE", "SUF", "MID", "EOT"):
            assert (row == s[name]).sum() == 1, name
        suf, mid = int(np.flatnonzero(row == s["SUF"])[0]), int(np.flatnonzero(row == s["MID"])[0])
        assert row[0] == s["PRE"] and row[-1] == s["EOT"] and 0 < suf < mid < len(row) - 1
        assert sorted(row[row < V]) == sorted(win[:d])  # a permutation of the document's tokens
        prefix, middle, suffix = parts
        doc = win[:d].tolist()
        assert prefix + middle + suffix == doc  # the middle is recoverable
        n_suf_first += suf == 1
        if spm_rate == 0.0:
            i, j = len(prefix), len(prefix) + len(middle)
            assert row.tolist() == [s["PRE"], *doc[:i], s["SUF"], *doc[j:], s["MID"], *doc[i:j], s["EOT"]]
    assert n_fim > 0.3 * rows.shape[0] * rows.shape[1]
    # <SUF> right after <PRE>: every SPM row; a PSM row only when its prefix is empty (cut at 0, ~2/(d+1)).
    share = n_suf_first / n_fim
    assert {0.0: share < 0.25, 0.5: 0.4 < share < 0.75, 1.0: share == 1.0}[spm_rate], share


def test_fim_rate_and_cut_points_are_uniform():
    w = windows(k=50, b=80, length=32)  # 4000 rows
    rows, obj = fim_rows(w, seed=7)
    is_fim = rows[..., 0] == obj.sentinels["PRE"]
    assert abs(is_fim.mean() - 0.5) < 0.04  # std 0.008
    d = w.shape[-1] - 4
    middles = [len(split_fim_row(r, obj.sentinels)[1]) for r in rows[is_fim]]
    assert abs(np.mean(middles) - d / 3) < 0.1 * d  # two uniform cuts: E|i - j| ~ d/3
    assert min(middles) == 0 and max(middles) >= d - 3  # empty and near-whole middles both occur
    for rate in (0.0, 1.0):
        rows, obj = fim_rows(w[:2], fim_rate=rate)
        assert ((rows[..., 0] == obj.sentinels["PRE"]).mean()) == rate


def test_split_fim_row_plain_is_none():
    assert split_fim_row([1, 2, 3], objectives.get("fim", V).sentinels) is None


# ----------------------------------------------------------------------------- mlm


def test_mlm_masking_rates_weights_and_targets():
    vocab = 1000  # large: a random replacement rarely equals the original token
    w = windows(k=40, b=50, length=64, vocab=vocab)
    obj = objectives.get("mlm", vocab)
    batch = obj.make_batch(w, np.random.default_rng(0))
    x = w[..., :-1]
    np.testing.assert_array_equal(batch["targets"], x)  # same position, original token
    chosen = batch["weights"] == 1
    assert set(np.unique(batch["weights"])) == {0.0, 1.0}
    assert (chosen.sum(-1) == round(0.15 * 64)).all()  # exactly 10 of 64 per row
    assert (batch["prefix_len"] == 64).all()
    np.testing.assert_array_equal(batch["inputs"][~chosen], x[~chosen])  # unchosen untouched
    got = batch["inputs"][chosen]
    masked = (got == obj.sentinels["MASK"]).mean()
    random = ((got != x[chosen]) & (got != obj.sentinels["MASK"])).mean()
    kept = (got == x[chosen]).mean()
    n = chosen.sum()  # 20000 chosen positions: std of the 0.1 shares ~ 0.002
    assert abs(masked - 0.8) < 0.015 and abs(random - 0.1) < 0.01 and abs(kept - 0.1) < 0.01, (masked, random, kept, n)
    assert got[got != obj.sentinels["MASK"]].max() < vocab  # random tokens come from the base vocabulary
    # Positions are uniform: every column is chosen about 15% of the time.
    per_position = chosen.mean((0, 1))
    assert per_position.min() > 0.10 and per_position.max() < 0.20


# ----------------------------------------------------------------------------- prefix lm and attention


def test_prefix_lm_weights_and_prefix_lengths():
    w = windows(k=20, b=50, length=16)
    batch = batch_of("prefix_lm", w)
    p = batch["prefix_len"]
    assert p.min() == 1 and p.max() == 15 and len(np.unique(p)) == 15  # uniform over [1, L-1]
    np.testing.assert_array_equal(batch["inputs"], w[..., :-1])
    np.testing.assert_array_equal(batch["targets"], w[..., 1:])
    t = np.arange(16)
    np.testing.assert_array_equal(batch["weights"], (t >= p[..., None] - 1).astype(np.float32))
    # The loss covers w[p..L]: L - p + 1 tokens, never a token inside the prefix.
    np.testing.assert_array_equal(batch["weights"].sum(-1), 16 - p + 1)


def mask_of(batch, k=0) -> np.ndarray:
    step = {key: jnp.asarray(v[k]) for key, v in batch.items()}
    return np.asarray(masks.attention_mask(step, step["inputs"].shape[-1]))


def test_prefix_lm_mask_is_bidirectional_in_the_prefix_and_causal_after():
    batch = batch_of("prefix_lm", windows(k=1, b=16, length=12))
    m = mask_of(batch)
    causal = np.tril(np.ones((12, 12), bool))
    for row, p in zip(m, batch["prefix_len"][0]):
        assert row[:p, :p].all()  # prefix tokens see each other both ways
        assert not row[:p, p:].any()  # ... and nothing after the prefix
        np.testing.assert_array_equal(row[p:], causal[p:])  # later tokens: causal (prefix included)


@pytest.mark.parametrize("name", NAMES)
def test_no_weighted_prediction_can_see_its_target(name):
    """Position t predicts targets[t]; for shifted objectives that token is inputs[t+1], which must
    be invisible to t wherever weights[t] > 0. MLM predicts in place, from a changed input
    (or, 10% of the time, BERT's unchanged one) with every position visible."""
    batch = batch_of(name, windows(k=1, b=16, length=12))
    m = mask_of(batch)
    if name == "mlm":
        assert m.all()
        return
    np.testing.assert_array_equal(batch["inputs"][..., 1:], batch["targets"][..., :-1])
    for row_mask, weights in zip(m, batch["weights"][0]):
        for t in np.flatnonzero(weights):
            assert not row_mask[t, t + 1 :].any(), (t, row_mask[t])


@functools.cache
def numpy_params(cfg: ModelConfig):
    """GPT params of `cfg` drawn in numpy (init_params run eagerly costs seconds of dispatch on CPU)."""
    from flax import traverse_util

    from gpt_jax.model import init_params

    shapes = nn.meta.unbox(jax.eval_shape(lambda: init_params(cfg, jax.random.key(0))))
    r = np.random.default_rng(0)
    flat = {
        path: (np.ones if path[-1] == "scale" else np.zeros)(s.shape, np.float32)
        if path[-1] in ("scale", "bias") or "bias" in path[-1]
        else (0.02 * r.standard_normal(s.shape)).astype(np.float32)
        for path, s in traverse_util.flatten_dict(shapes).items()
    }
    return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


@functools.cache
def _loss_fn(cfg: ModelConfig):
    from gpt_jax.model import GPT
    from gpt_jax.objectives.loss import causal_lm_loss

    def loss(params, batch):
        logits = GPT(cfg).apply(
            {"params": params}, batch["inputs"], mask_BxLxS=masks.attention_mask(batch, batch["inputs"].shape[-1])
        )
        total, count = causal_lm_loss(logits, batch)
        return total / count

    return jax.jit(loss)


def strided_windows(k, b, length, seed, stride=7) -> np.ndarray:
    """Learnable windows: each row counts up by `stride` (mod V) from a random start, so every token
    follows from its neighbour (causal, prefix LM, FIM's segments) or its two neighbours (MLM)."""
    start_KxBx1 = np.random.default_rng(seed).integers(0, V, (k, b, 1))
    return ((start_KxBx1 + stride * np.arange(length + 1)) % V).astype(np.int32)


def objective_batches(name, k, b, seed):
    batch = objectives.get(name, V).make_batch(strided_windows(k, b, 16, seed), np.random.default_rng([seed, 1]))
    batch.setdefault("prefix_len", np.zeros((k, b), np.int32))  # 0 = plain causal: same pytree, one compile
    return {key: jnp.asarray(v) for key, v in batch.items()}


@functools.cache
def _adam_steps(cfg: ModelConfig, lr: float):
    """jit: (params, batches [K, ...]) -> (params after K Adam steps, the K training losses)."""
    import optax

    tx, loss = optax.adam(lr), _loss_fn(cfg)

    def train(params, batches_K):
        def step(carry, batch):
            p, opt_state = carry
            value, grads = jax.value_and_grad(loss)(p, batch)
            updates, opt_state = tx.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), value

        (params, _), losses_K = jax.lax.scan(step, (params, tx.init(params)), batches_K)
        return params, losses_K

    return jax.jit(train)


def test_every_objective_trains_through_the_model_and_loss():
    """Each objective's batches through GPT (mask from gpt_jax.masks) and causal_lm_loss: near ln(vocab)
    at init, then 40 Adam steps on learnable windows bring the loss on a held-out batch down by over a
    fifth (measured: causal and prefix LM 4.2 -> <0.1, FIM -> 0.9, MLM -> 2.8: it is trained on only
    its 15% chosen positions); zero weights, or targets the inputs do not determine, would leave it
    near ln(vocab). One model with room for the largest sentinel set, one pytree for every objective,
    so one compile."""
    cfg = ModelConfig(vocab_size=V + 4, block_size=16, n_layer=1, n_head=2, n_embd=32)
    params = numpy_params(cfg)
    losses = {}
    for name in NAMES:
        held_out = {k: v[0] for k, v in objective_batches(name, 1, 32, seed=99).items()}
        before = float(_loss_fn(cfg)(params, held_out))
        assert abs(before - np.log(V + 4)) < 0.5, (name, before)
        trained, train_losses = _adam_steps(cfg, 1e-2)(params, objective_batches(name, 40, 32, seed=0))
        after = float(_loss_fn(cfg)(trained, held_out))
        losses[name] = (round(before, 2), round(float(train_losses[-1]), 2), round(after, 2))
        assert np.isfinite(np.asarray(train_losses)).all(), name
    assert all(after < 0.8 * before for before, _, after in losses.values()), losses  # (init, last train, held out)


# ----------------------------------------------------------------------------- infill


def test_infill_prompt_layout():
    s = objectives.get("fim", V).sentinels
    enc = lambda text: np.array([ord(c) - ord("a") for c in text], np.int32)
    assert infill_prompt(enc, "ab", "cd", s) == [s["PRE"], 0, 1, s["SUF"], 2, 3, s["MID"]]
    assert infill_prompt(enc, "", "c", s) == [s["PRE"], s["SUF"], 2, s["MID"]]
    assert infill_prompt(enc, "a", "", s) == [s["PRE"], 0, s["SUF"], s["MID"]]
    assert all(type(t) is int for t in infill_prompt(enc, "ab", "cd", s))


def test_take_middle_stops_at_eot_and_drops_pads():
    assert take_middle([5, 6, 9, -1, -1], eot_id=9) == ([5, 6], True)
    assert take_middle([5, 6, 7], eot_id=9) == ([5, 6, 7], False)
    assert take_middle([9, 5], eot_id=9) == ([], True)


def write_config(workdir, **config):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(config))
    return workdir


@pytest.mark.parametrize(
    "config, named", [({"objective": "causal"}, "'causal'"), ({}, "'causal'"), ({"objective": "mlm"}, "'mlm'")]
)
def test_sample_infill_on_a_non_fim_run_is_a_one_line_error(tmp_path, capsys, config, named):
    """Checked from config.json before any checkpoint is read (these workdirs have none); a run from
    before `objective` existed counts as causal."""
    from gpt_jax.cli import sample

    workdir = write_config(tmp_path / "run", **config)
    assert sample.main([f"--workdir={workdir}", "--infill_prefix=ab", "--infill_suffix=cd"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "objective='fim'" in err and f"objective={named}" in err


def fake_fim_run(monkeypatch, tmp_path, block_size=32):
    """A workdir whose config says fim, with load_run patched to a random tiny model (no checkpoint)."""
    from gpt_jax import workdir as workdir_lib
    from gpt_jax.data.tokenizers import CharTokenizer

    tok = CharTokenizer(" abcdefgh")
    cfg = ModelConfig(vocab_size=tok.vocab_size + 4, block_size=block_size, n_layer=1, n_head=2, n_embd=32)
    params = numpy_params(cfg)
    config = {"objective": "fim", "sample": {"temperature": 1.0, "top_k": None}}
    run = write_config(tmp_path / "fim_run", **config)
    monkeypatch.setattr(workdir_lib, "load_run", lambda w, **kw: (ml_collections.ConfigDict(config), cfg, params, tok))
    return run, cfg, tok


def test_sample_infill_prompt_stop_and_output(monkeypatch, tmp_path, capsys):
    """The CLI's plumbing with generate replaced: prompt, stop/banned ids, the two printed lines."""
    from gpt_jax.cli import sample

    run, _, tok = fake_fim_run(monkeypatch, tmp_path)
    s = objectives.get("fim", tok.vocab_size).sentinels
    calls = []

    def fake_generate(model_config, params, prompts, options):
        calls.append((prompts, options))
        mid = tok.encode("hd").tolist()
        return np.array([mid + [s["EOT"], -1, -1], mid + [1, 2, 3]], np.int32)  # ended; cut by max_new_tokens

    monkeypatch.setattr(sample, "generate", fake_generate)
    args = [
        f"--workdir={run}",
        "--infill_prefix=ab c",
        "--infill_suffix= fg",
        "--num_samples=2",
        "--max_new_tokens=100",
    ]
    assert sample.main(args) == 0
    ((prompts, options),) = calls
    assert prompts == [infill_prompt(tok.encode, "ab c", " fg", s)] * 2
    assert options.stop_ids == (s["EOT"],)
    assert set(options.banned_ids) == {s["PRE"], s["SUF"], s["MID"]}
    assert options.max_new_tokens == 32 - len(prompts[0])  # capped to the room left in the block
    out = capsys.readouterr().out.split(sample.SEPARATOR + "\n")
    assert out[0] == "ab chd fg\nmiddle: 'hd'\n"
    assert out[1] == "ab chdabc fg\nmiddle: 'hdabc' (no EOT)\n"


def test_sample_cli_on_a_fim_model_never_emits_sentinels(monkeypatch, tmp_path, capsys):
    """A random (near-uniform) model over 9 chars + 4 sentinels: unbanned, a sentinel would come up
    within a few tokens and crash the tokenizer's decode."""
    from gpt_jax.cli import sample

    run, _, _ = fake_fim_run(monkeypatch, tmp_path, block_size=16)
    assert sample.main([f"--workdir={run}", "--infill_prefix=abc", "--infill_suffix=fgh", "--seed=3"]) == 0
    filled, middle = capsys.readouterr().out.splitlines()[-2:]
    assert filled.startswith("abc") and filled.endswith("fgh") and middle.startswith(sample.MIDDLE)
    assert sample.main([f"--workdir={run}", "--prompt=abc", "--max_new_tokens=12", "--temperature=1"]) == 0
    assert len(capsys.readouterr().out) == len("abc") + 12 + 1  # 12 decodable characters and a newline
    too_long = "abcdefgh" * 2
    assert sample.main([f"--workdir={run}", f"--infill_prefix={too_long}"]) == 2
    assert "no room" in capsys.readouterr().err


# ----------------------------------------------------------------------------- END TO END (needs the lead's wiring)
# Trains configs/tiny.py with objective=fim through the real trainer, then samples and infills from
# the workdir. Needs (lead's files): the LM task building batches with gpt_jax.objectives, the model
# vocab sized tokenizer.vocab_size + objective.extra_tokens, and the end-of-run sample
# (trainer.sample_text) banning the sentinel ids, which the tokenizer cannot decode.


def test_end_to_end_fim_training_then_sample_and_infill(tiny_config, tmp_path, capsys):
    from gpt_jax.cli import sample
    from gpt_jax.data import load_tokenizer
    from gpt_jax.trainer import train_and_evaluate

    c = tiny_config()
    c.objective = "fim"
    c.train.num_steps = 10  # one compiled call of 10 steps: compile time dominates
    c.train.eval_every = 10
    c.checkpoint.every = 10
    c.sample.num_tokens = 64  # the end-of-run sample must never produce a sentinel
    workdir = tmp_path / "fim"
    summary = train_and_evaluate(c, workdir)
    assert summary["status"] == "completed" and np.isfinite(summary["val_loss"])
    assert len(summary["sample"]) == len(c.sample.prompt) + 64
    tok = load_tokenizer(workdir)
    model_config = json.loads((workdir / "model_config.json").read_text())
    assert model_config["vocab_size"] == tok.vocab_size + 4, "model vocab must hold the 4 fim sentinels"
    assert json.loads((workdir / "config.json").read_text())["objective"] == "fim"
    capsys.readouterr()
    assert (
        sample.main([f"--workdir={workdir}", "--infill_prefix=ROMEO:", "--infill_suffix=\n", "--max_new_tokens=8"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and sample.MIDDLE in out
