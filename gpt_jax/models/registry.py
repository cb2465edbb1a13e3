"""Model families by `config.model.family`: one line per family."""

from __future__ import annotations

import dataclasses

from gpt_jax.models import dcgan, gpt, vit, vlm
from gpt_jax.models.base import ModelFamily

FAMILIES: dict[str, ModelFamily] = {
    "gpt": gpt.FAMILY,
    "vit": vit.FAMILY,
    "vlm": vlm.FAMILY,
    "dcgan": dcgan.FAMILY,
}


def register(family: ModelFamily) -> None:
    """Add a family defined outside the package (a test's, a user's experiment)."""
    FAMILIES[family.name] = family


def get(name: str | None) -> ModelFamily:
    name = name or "gpt"
    if name not in FAMILIES:
        raise ValueError(
            f"config.model.family={name!r} is not one of {sorted(FAMILIES)}; register it in gpt_jax.models.registry"
        )
    return FAMILIES[name]


def family_of(model_section) -> ModelFamily:
    """The family a run's `config.model` (or a saved model_config.json dict) names; "gpt" when unset."""
    return get(model_section.get("family") if hasattr(model_section, "get") else None)


def saved_fields(family: ModelFamily, cfg) -> dict:
    """What model_config.json holds: the config's fields, and the family unless it is the default "gpt"
    (so GPT workdirs keep the file they always had)."""
    fields = dataclasses.asdict(cfg)
    return fields if family.name == "gpt" else {"family": family.name, **fields}


def config_from_saved(fields: dict):
    """The model config of a saved model_config.json dict."""
    fields = dict(fields)
    return get(fields.pop("family", None)).config_from_saved(fields)


def build_model_config(config, vocab_size: int):
    """The run's model config: its family's `config_from(config.model, vocab_size)`."""
    return family_of(config.model).config_from(config.model, vocab_size)
