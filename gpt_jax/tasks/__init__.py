"""Tasks: what a run trains (`config.task.name`), registered in gpt_jax.tasks.registry; the contract is
gpt_jax.tasks.base.Task."""
