"""Chat templates: how system text, user turns and assistant replies are laid out as one prompt.

Shared by SFT rendering (gpt_jax.data.sft) and the chat CLI, so a model tuned on one is prompted the same way.
"""

from __future__ import annotations

import dataclasses

# name -> (system block, user turn, assistant prefix, end of an assistant turn, stop string). The
# stop string ends a reply: the model closes its turn or starts the next user turn by itself.
TEMPLATES: dict[str, tuple[str, str, str, str, str]] = {
    "plain": ("{system}\n\n", "User: {text}\n", "Assistant: ", "\n", "\nUser:"),
    "chatml": (
        "<|im_start|>system\n{system}<|im_end|>\n",
        "<|im_start|>user\n{text}<|im_end|>\n",
        "<|im_start|>assistant\n",
        "<|im_end|>\n",
        "<|im_end|>",
    ),
}


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    system: str
    user: str
    assistant: str
    end: str
    stop: str

    @classmethod
    def named(cls, name: str) -> ChatTemplate:
        if name not in TEMPLATES:
            raise ValueError(f"unknown chat template {name!r}; choose one of {sorted(TEMPLATES)}")
        return cls(*TEMPLATES[name])

    def render(self, system: str, turns: list[tuple[str, str]], user: str) -> str:
        """The prompt for the next reply: system block, past (user, reply) turns, the new user turn."""
        text = self.system.format(system=system) if system else ""
        for u, a in turns:
            text += self.user.format(text=u) + self.assistant + a + self.end
        return text + self.user.format(text=user) + self.assistant
