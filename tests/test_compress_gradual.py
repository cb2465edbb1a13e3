"""Gradual magnitude pruning: the cubic schedule, masks recomputed every k steps, exact zeros after every
update, monotone masks, the final sparsity reached."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gpt_jax.compression.gradual import GradualSchedule, gradual_masked


def test_cubic_schedule_matches_zhu_gupta():
    s = GradualSchedule(final=0.8, steps=100, every=10, initial=0.1)
    for t in (0, 10, 50, 99, 100, 150):
        want = 0.8 + (0.1 - 0.8) * (1 - min(t, 100) / 100) ** 3
        assert abs(float(s.sparsity_at(t)) - want) < 1e-6


@pytest.mark.parametrize("kw,match", [(dict(final=1.0), "must be >= 0 and < 1"), (dict(every=0), "must be >= 1")])
def test_bad_schedules_are_one_line_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        GradualSchedule(**{"final": 0.5, "steps": 10, **kw})


def test_masks_grow_on_schedule_and_pruned_weights_stay_exactly_zero():
    rng = np.random.default_rng(0)
    params = {
        "h_0": {"mlp": {"fc": {"kernel": jnp.asarray(rng.standard_normal((16, 32)), jnp.float32)}}},
        "ln_f": {"scale": jnp.ones(16)},
    }
    sched = GradualSchedule(final=0.5, steps=20, every=5)
    tx = gradual_masked(optax.adamw(1e-2, weight_decay=0.1), sched, params)
    state = tx.init(params)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))
    prev_mask, seen = None, []
    for t in range(1, 31):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), params)
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        k = np.asarray(state.masks["h_0"]["mlp"]["fc"]["kernel"])
        w = np.asarray(params["h_0"]["mlp"]["fc"]["kernel"])
        assert (w[~k] == 0).all()  # exactly zero, weight decay and Adam notwithstanding
        if prev_mask is not None:
            assert not (k & ~prev_mask).any()  # pruned weights never come back
            if t % 5:
                np.testing.assert_array_equal(k, prev_mask)  # masks change only every k steps
        prev_mask = k
        seen.append(1 - k.mean())
        assert np.asarray(state.masks["ln_f"]["scale"]).all()  # norms never pruned
    want = [0.5 + (0 - 0.5) * (1 - t / 20) ** 3 for t in (5, 10, 15, 20)]
    np.testing.assert_allclose([seen[t - 1] for t in (5, 10, 15, 20)], want, atol=1 / 512 + 1e-9)
    assert seen[-1] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--finetune_steps=10", "--gradual_steps=20"], "must be in \\[1, --finetune_steps\\]"),
        (["--finetune_steps=10", "--gradual_steps=5", "--pattern=2:4"], "drop --pattern"),
        (["--finetune_steps=10", "--gradual_steps=5", "--mask_every=0"], "must be >= 1"),
    ],
)
def test_bad_gradual_flags_are_one_line_and_write_nothing(tmp_path, capsys, extra, match):
    import re  # lazy: only this test

    from gpt_jax.cli import compress  # lazy: only this test

    out = tmp_path / "out"
    argv = ["prune", f"--workdir={tmp_path}", f"--out={out}"] + (
        ["--sparsity=0.5"] if "--pattern=2:4" not in extra else []
    )
    assert compress.main(argv + extra) != 0
    err = capsys.readouterr().err.strip()
    assert re.search(match, err) and "\n" not in err and not out.exists()
