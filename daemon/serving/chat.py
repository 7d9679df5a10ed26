"""Request-level pieces of OpenAI-style generation on the model server: sampling settings, chat prompts, stop
strings, and which model answered. No HTTP here (daemon/api/openai_compat.py maps requests onto these).

Chat prompts: the tokenizer's chat template when it has one (``add_generation_prompt=True``); otherwise the plain
format ``PLAIN_FORMAT`` documents: one ``"<Role>: <content>"`` line per message, then ``"Assistant:"``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria

from compass.errors import CompassError

PLAIN_FORMAT = "one '<Role>: <content>' line per message (Role capitalised), then 'Assistant:'"
ROLES = ("system", "developer", "user", "assistant")


class RequestError(CompassError, ValueError):
    """A generation request the server cannot run as asked; ``param`` names the field (OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


@dataclass(frozen=True)
class Sampling:
    """How to draw one continuation. ``temperature == 0``: greedy (deterministic); otherwise sampled with
    ``top_p``, reproducibly when ``seed`` is given. ``stop``: the text ends before the first of these strings."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature == 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}


@dataclass(frozen=True)
class Served:
    """Which model answered a request: ``model`` is its id in GET /v1/models (the base model's name or an
    adapter name); ``routed``: chosen by the §3.2.5 router (``model: "auto"``), else pinned by the caller."""

    model: str
    adapter: str | None
    language: str | None
    version: str | None
    kind: str
    reason: str
    routed: bool

    def extension(self) -> dict[str, Any]:
        """The ``compass`` field of a response (OpenAI clients ignore unknown fields)."""
        return {"language": self.language, "adapter": self.adapter, "version": self.version, "kind": self.kind,
                "routed": self.routed, "reason": self.reason}


@dataclass
class Completion:
    """One finished continuation; ``finish_reason`` is OpenAI's: ``stop`` (EOS or a stop string) or ``length``."""

    text: str = ""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    served: Served | None = field(default=None)

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def message_text(content: Any, where: str) -> str:
    """A message's ``content``: a string, or a list of ``{"type": "text", "text": ...}`` parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(f"{where}[{i}] is not a text part; this server takes text only: "
                                   '{"type": "text", "text": "..."}', param=f"{where}[{i}]")
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"{where} is {type(content).__name__}; give a string or a list of text parts", param=where)


def chat_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> tuple[str, bool]:
    """The prompt of ``messages`` (each ``{"role", "content"}`` with string content) and whether it already holds
    the tokenizer's special tokens (a chat template adds BOS itself: tokenising must not add it twice)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True), True
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"]), False


def route_text(messages: Sequence[Mapping[str, str]]) -> str:
    """The text whose language routes a chat (§3.2.5): the last user message (what the user asks in), else the
    last message with text; the template's markup would only blur language ID."""
    for m in reversed(messages):
        if m["role"] == "user" and m["content"].strip():
            return m["content"]
    for m in reversed(messages):
        if m["content"].strip():
            return m["content"]
    raise RequestError("every message's content is empty; send at least one message with text", param="messages")


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


class StopBuffer:
    """Streams text but holds back a tail that could be the start of a stop string, so a stop string is never
    sent half before it is recognised."""

    def __init__(self, stop: Sequence[str]):
        self.stop = tuple(stop)
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self._text = ""
        self.stopped = False

    def push(self, chunk: str) -> str:
        """Add generated text; returns what may be sent now ("" once stopped)."""
        if self.stopped:
            return ""
        self._text += chunk
        head, self.stopped = cut_at_stop(self._text, self.stop)
        if self.stopped:
            self._text = ""
            return head
        ready = len(self._text) - self._hold
        if ready <= 0:
            return ""
        out, self._text = self._text[:ready], self._text[ready:]
        return out

    def flush(self) -> str:
        out, self._text = ("" if self.stopped else self._text), ""
        return out


class StopOn(StoppingCriteria):
    """Ends generation when a stop string appears in the new text or ``cancel`` is set (a stream's client left).
    Decodes only the last tokens each step: a stop string of L characters spans at most L tokens that each decode
    to at least one character."""

    def __init__(self, tokenizer: Any, prompt_len: int, stop: Sequence[str], cancel: threading.Event | None = None):
        self.tokenizer, self.prompt_len, self.stop, self.cancel = tokenizer, prompt_len, tuple(stop), cancel
        self._tail = max((len(s) for s in self.stop), default=0) + 2

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        done = self.cancel is not None and self.cancel.is_set()
        if not done and self.stop:
            new = input_ids[0, self.prompt_len:][-self._tail:].tolist()
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            done = any(s in text for s in self.stop)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
