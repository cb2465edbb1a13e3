"""A task with two sub-models and two optimizers, updated alternately, through the unchanged trainer
(issue 15's seam for GANs and distillation): registered with one line, trained, checkpointed, resumed."""

import jax
import numpy as np
import optax

from gpt_jax.checkpoint import Checkpointer, checkpoint_dir
from gpt_jax.metrics import read_metrics
from gpt_jax.objectives.loss import lm_loss
from gpt_jax.tasks.lm import LMTask
from gpt_jax.tasks.registry import TASKS
from gpt_jax.train import Update
from gpt_jax.trainer import Trainer, train_and_evaluate


class TwoLMs(LMTask):
    """Two GPTs on the same batches: `fast` with the run's optimizer, `slow` with plain SGD."""

    name = "two_lms"

    def init(self, rng):
        a, b = jax.random.split(rng)
        return {"fast": super().init(a)[0], "slow": super().init(b)[0]}, {}

    def updates(self, tx, schedule):
        one = lm_loss(self.model_cfg)
        on = lambda name: lambda params, frozen, batch, rng: one(params[name], frozen, batch, rng)
        sgd = optax.sgd(0.05)
        return [
            Update(on("fast"), tx, schedule, "fast"),
            Update(on("slow"), sgd, optax.constant_schedule(0.05), "slow"),
        ]

    def metrics(self):
        one = lm_loss(self.model_cfg)
        return lambda params, frozen, batch: {
            "val_loss": one(params["fast"], frozen, batch, None),
            "val_slow_loss": one(params["slow"], frozen, batch, None),
        }


TASKS["two_lms"] = TwoLMs  # the one registry line


def two_lm_config(tiny_config, steps):
    config = tiny_config()
    config.task.name = "two_lms"
    config.train.num_steps, config.checkpoint.every, config.train.eval_every = steps, 10, 10
    config.optim.decay_steps = 20  # the same schedule however far a run goes
    return config


def test_two_sub_models_train_with_their_own_optimizers_and_resume(tiny_config, tmp_path):
    straight = train_and_evaluate(two_lm_config(tiny_config, 20), tmp_path / "a")
    rows = read_metrics(tmp_path / "a")
    logged = [r for r in rows if "fast_loss" in r]
    assert {"fast_loss", "slow_loss", "fast_lr", "slow_lr", "fast_grad_norm", "slow_grad_norm"} <= set(logged[-1])
    assert logged[-1]["slow_lr"] == np.float32(0.05) and logged[-1]["fast_lr"] != np.float32(0.05)
    assert logged[-1]["fast_loss"] < logged[0]["fast_loss"] and logged[-1]["slow_loss"] < logged[0]["slow_loss"]
    assert straight["val_loss"] < straight["val_slow_loss"]  # AdamW beats plain SGD in 20 steps

    tr = Trainer(two_lm_config(tiny_config, 20), tmp_path / "b", write=False)
    assert set(tr.abstract.opt_state) == {"fast", "slow"}
    assert isinstance(tr.abstract.opt_state["slow"], tuple) and len(jax.tree.leaves(tr.abstract.opt_state["slow"])) == 0

    train_and_evaluate(two_lm_config(tiny_config, 10), tmp_path / "b")  # stopped at 10, then resumed
    resumed = train_and_evaluate(two_lm_config(tiny_config, 20), tmp_path / "b")
    assert resumed["val_loss"] == straight["val_loss"] and resumed["val_slow_loss"] == straight["val_slow_loss"]
    assert Checkpointer(checkpoint_dir(tmp_path / "b"), save_every=0, read_only=True).steps()[-1] == 20
    np.testing.assert_equal(
        [r["slow_loss"] for r in read_metrics(tmp_path / "b") if r.get("step") == 20],
        [r["slow_loss"] for r in rows if r.get("step") == 20],
    )
