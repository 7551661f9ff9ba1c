"""Render input-output pairs as model input: the model's chat template, or a plain template.

A pair becomes two token lists that are concatenated for training and scoring:

* the *prompt*: the conversation up to and including the assistant's turn header (chat), or
  ``plain_format.format(prompt=...)`` (plain); few-shot demonstrations come before it as
  earlier turns (chat) or as earlier filled-in templates separated by a blank line (plain);
* the *response*: the answer followed by the end-of-turn marker (chat: what the template
  writes after the answer, e.g. ``<|im_end|>``; plain: the tokenizer's EOS token), so the
  model learns to stop and choice scoring compares complete answers.

Only response tokens carry loss (see :mod:`continual.data.pairs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from continual.data.documents import Example
from continual.errors import ConfigError

TEMPLATES = ("auto", "chat", "plain")
DEFAULT_PLAIN_FORMAT = "{prompt}\nAnswer: "


class Renderer:
    """Turns prompts and responses into token ids for one tokenizer and template.

    Args:
        tokenizer: A Hugging Face tokenizer.
        template: ``chat`` (the tokenizer's chat template; a ConfigError if it has none),
            ``plain`` (``plain_format``) or ``auto`` (chat when the tokenizer has a template).
        system_prompt: The system turn for chat rendering; ``None`` keeps the template's
            default (SmolLM2's adds its own system line).
        plain_format: The plain template; must contain ``{prompt}``.
        domain: The domain name, for error messages.
    """

    def __init__(
        self,
        tokenizer: Any,
        template: str = "auto",
        system_prompt: str | None = None,
        plain_format: str = DEFAULT_PLAIN_FORMAT,
        domain: str = "?",
    ) -> None:
        if template not in TEMPLATES:
            raise ConfigError(
                f"domain {domain!r}: template={template!r} is not one of {', '.join(TEMPLATES)}; "
                f"fix `domains.{domain}.template`."
            )
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if template == "chat" and not has_chat:
            raise ConfigError(
                f"domain {domain!r} asks for the chat template, but the model's tokenizer has "
                f"none; set `domains.{domain}.template=plain` (or auto), or use a chat model."
            )
        try:
            filled = plain_format.format(prompt="\0")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(
                f"domain {domain!r}: plain_format {plain_format!r} cannot be filled in "
                f"({type(e).__name__}: {e}); it may use only the field {{prompt}}, and literal "
                f"braces must be doubled ({{{{ }}}}). Fix `domains.{domain}.plain_format`."
            ) from e
        if "\0" not in filled:
            raise ConfigError(
                f"domain {domain!r}: plain_format {plain_format!r} has no '{{prompt}}' field; "
                f"fix `domains.{domain}.plain_format`."
            )
        self.tokenizer = tokenizer
        self.chat = template == "chat" or (template == "auto" and has_chat)
        self.system_prompt = system_prompt
        self.plain_format = plain_format
        self.domain = domain

    @property
    def name(self) -> str:
        """``chat`` or ``plain``: the template actually used."""
        return "chat" if self.chat else "plain"

    def _messages(self, demos: Sequence[Example], prompt: str) -> list[dict[str, str]]:
        messages = [] if self.system_prompt is None else [
            {"role": "system", "content": self.system_prompt}
        ]  # fmt: skip
        for demo in demos:
            messages += [
                {"role": "user", "content": demo.prompt},
                {"role": "assistant", "content": demo.response},
            ]
        return [*messages, {"role": "user", "content": prompt}]

    def prompt_text(self, prompt: str, demos: Sequence[Example] = ()) -> str:
        """The text before the answer, with ``demos`` as solved examples in front."""
        if self.chat:
            return self.tokenizer.apply_chat_template(
                self._messages(demos, prompt), add_generation_prompt=True, tokenize=False
            )
        shots = "".join(
            self.plain_format.format(prompt=d.prompt) + d.response + "\n\n" for d in demos
        )
        return shots + self.plain_format.format(prompt=prompt)

    def response_text(self, response: str) -> str:
        """The answer followed by the end-of-turn marker (see the module docstring)."""
        if not self.chat:
            return response + (self.tokenizer.eos_token or "")
        messages = self._messages((), "x")
        before = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        full = self.tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": response}], tokenize=False
        )
        if not full.startswith(before) or response.strip() not in full[len(before) :]:
            raise ConfigError(
                f"domain {self.domain!r}: the model's chat template does not write the answer "
                f"right after the assistant header; set `domains.{self.domain}.template=plain`."
            )
        return full[len(before) :].rstrip()

    def encode(
        self, example: Example, demos: Sequence[Example] = ()
    ) -> tuple[list[int], list[int]]:
        """``(prompt_ids, response_ids)`` of ``example``; response ids end with the turn end."""
        return self.encode_prompt(example.prompt, demos), self.encode_response(example.response)

    def encode_prompt(self, prompt: str, demos: Sequence[Example] = ()) -> list[int]:
        """Token ids of :meth:`prompt_text` (a plain prompt gets the tokenizer's BOS, if any)."""
        return list(
            self.tokenizer(self.prompt_text(prompt, demos), add_special_tokens=not self.chat)[
                "input_ids"
            ]
        )

    def encode_response(self, response: str) -> list[int]:
        """Token ids of :meth:`response_text`."""
        return list(
            self.tokenizer(self.response_text(response), add_special_tokens=False)["input_ids"]
        )

    def stop_ids(self) -> list[int]:
        """Token ids that end a generated answer (the end-of-turn marker and EOS)."""
        ids = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        if self.chat:
            tail = self.encode_response("")
            if tail:
                ids.add(tail[-1])
        return sorted(ids)
