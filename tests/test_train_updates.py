"""The multi-model seam of gpt_jax.train (issue 15): named sub-models, each with its own optimizer and loss,
updated in order inside one step (a generator and a discriminator; n_critic repeats), sharded state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gpt_jax import sharding as shd
from gpt_jax.train import Optimizers, TrainState, Update, create_state, make_updates_step, task_state_shardings


def loss_g(params, frozen, batch, rng):
    """g chases d: its loss depends on the other sub-model's current value."""
    del frozen, rng
    return jnp.sum((params["g"]["w"] - params["d"]["w"]) ** 2), jnp.asarray(1.0)


def loss_d(params, frozen, batch, rng):
    """d chases the data and runs from g."""
    del frozen, rng
    return jnp.sum((params["d"]["w"] - batch["x"]) ** 2) - 0.1 * jnp.sum(
        (params["d"]["w"] - params["g"]["w"]) ** 2
    ), jnp.asarray(1.0)


def two_player(order=("d", "g")):
    txs = {"g": optax.sgd(0.1), "d": optax.adam(0.05)}
    losses = {"g": loss_g, "d": loss_d}
    return [Update(losses[n], txs[n], optax.constant_schedule(0.1 if n == "g" else 0.05), name=n) for n in order]


def init(rng):
    del rng
    return {"g": {"w": jnp.zeros(3)}, "d": {"w": jnp.ones(3)}}, {}


def test_updates_alternate_each_with_its_own_optimizer():
    updates = two_player()
    opt = Optimizers(tuple(updates))
    params, _ = init(None)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params), rng=jax.random.key(0))
    assert set(state.opt_state) == {"g", "d"}
    batch = {"x": jnp.array([2.0, 2.0, 2.0])}
    new, metrics = jax.jit(make_updates_step(updates))(state, batch)
    assert set(metrics) == {"d_loss", "d_grad_norm", "d_lr", "g_loss", "g_grad_norm", "g_lr", "finite"}

    # the same by hand: d's Adam step first, then g's SGD step against the *new* d
    d_grads = jax.grad(lambda d: loss_d({"g": params["g"], "d": d}, {}, batch, None)[0])(params["d"])
    d_upd, _ = optax.adam(0.05).update(d_grads, optax.adam(0.05).init(params["d"]), params["d"])
    d_new = optax.apply_updates(params["d"], d_upd)
    g_grads = jax.grad(lambda g: loss_g({"g": g, "d": d_new}, {}, batch, None)[0])(params["g"])
    g_new = jax.tree.map(lambda p, gr: p - 0.1 * gr, params["g"], g_grads)
    np.testing.assert_allclose(new.params["d"]["w"], d_new["w"], rtol=1e-6)
    np.testing.assert_allclose(new.params["g"]["w"], g_new["w"], rtol=1e-6)
    assert int(new.opt_state["d"][0].count) == 1 and int(new.step) == 1


def test_a_repeated_update_shares_its_optimizer_state():
    updates = two_player(order=("d", "d", "g"))  # two critic steps per generator step
    opt = Optimizers(tuple(updates))
    params, _ = init(None)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params), rng=jax.random.key(0))
    new, _ = jax.jit(make_updates_step(updates))(state, {"x": jnp.ones(3)})
    assert int(new.opt_state["d"][0].count) == 2


def test_unnamed_updates_cannot_share_a_step():
    tx = optax.sgd(0.1)
    with pytest.raises(ValueError, match="must each name the sub-model"):
        Optimizers(
            (
                Update(loss_g, tx, optax.constant_schedule(0.1)),
                Update(loss_d, tx, optax.constant_schedule(0.1), name="d"),
            )
        ).init(init(None)[0])


def test_two_sub_models_get_sharded_state_and_skip_nonfinite_steps():
    updates = two_player()
    opt = Optimizers(tuple(updates))
    mesh = shd.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    reference = {}  # no model params to take logical axes from: everything replicates
    abstract, shardings = task_state_shardings(init, reference, opt, mesh)
    state = create_state(init, opt, 0, shardings)
    assert state.params["g"]["w"].sharding == shd.replicated(mesh)
    step = jax.jit(make_updates_step(updates, skip_nonfinite=True))
    bad, metrics = step(state, {"x": jnp.array([jnp.nan, 0.0, 0.0])})
    assert not bool(metrics["finite"])
    np.testing.assert_array_equal(bad.params["d"]["w"], state.params["d"]["w"])
    assert int(bad.opt_state["d"][0].count) == 0 and int(bad.step) == 1
