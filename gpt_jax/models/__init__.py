"""Model families (`config.model.family`): see gpt_jax.models.base.ModelFamily; registered in gpt_jax.models.registry."""
