"""The tokens a request is charged before it is sent: a cheap estimate, never a tokenizer.

Why no tokenizer: the gateway serves many model families with different vocabularies, a
tokenizer costs more CPU than the rest of the request path, and the estimate is corrected by
settlement anyway (`budget.settle_state`): it only has to be close enough that a burst cannot
overshoot by much, and never cheap to game by large outputs, which `max_tokens` bounds.

The estimate:
- prompt: UTF-8 bytes / 4 (rounded up) of every text the model reads — message contents (a
  string, or the `text` of content parts), `name`, tool call arguments, the JSON of `tools` /
  `functions`; a completions `prompt` or embeddings `input` given as strings; a list of token ids
  counts one per id. Four bytes per token is OpenAI's rule of thumb for English; text in
  scripts of three bytes per character is over-counted rather than under.
- chat overhead: `MESSAGE_OVERHEAD` per message (role and separators) plus `REPLY_PRIMING`.
- non-text content parts (images, audio): `MEDIA_PART_TOKENS` each, a flat guess.
- output: `max_completion_tokens`, else `max_tokens`, else the route's default, times `n`
  (choices); embeddings produce no output tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3
MEDIA_PART_TOKENS = 256
DEFAULT_MAX_TOKENS = 1024
"""Output tokens reserved when neither the request nor the route says (`limits.defaultMaxTokens`)."""


def text_tokens(text: str) -> int:
    return -(-len(text.encode()) // BYTES_PER_TOKEN) if text else 0


def _input_tokens(value: Any) -> int:
    """A completions `prompt` or embeddings `input`: text, token ids, or lists of either."""
    if isinstance(value, str):
        return text_tokens(value)
    if isinstance(value, list):
        if value and all(isinstance(item, int) for item in value):
            return len(value)
        return sum(_input_tokens(item) for item in value)
    return 0


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, Mapping):
            text = part.get("text")
            total += text_tokens(text) if isinstance(text, str) else MEDIA_PART_TOKENS
    return total


def _message_tokens(message: Any) -> int:
    if not isinstance(message, Mapping):
        return 0
    total = MESSAGE_OVERHEAD + _content_tokens(message.get("content"))
    name = message.get("name")
    if isinstance(name, str):
        total += text_tokens(name)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, Mapping) else None
            arguments = function.get("arguments") if isinstance(function, Mapping) else None
            if isinstance(arguments, str):
                total += text_tokens(arguments)
    return total


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """The estimated input tokens of a chat, completions or embeddings request body."""
    messages = body.get("messages")
    if isinstance(messages, list):
        total = REPLY_PRIMING + sum(_message_tokens(message) for message in messages)
        for field in ("tools", "functions"):
            declared = body.get(field)
            if declared:
                total += -(-len(orjson.dumps(declared)) // BYTES_PER_TOKEN)
        return total
    if "prompt" in body:
        return _input_tokens(body["prompt"])
    return _input_tokens(body.get("input"))


def output_tokens(body: Mapping[str, Any], default_max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """The output tokens to reserve: the request's bound (or the default) times its choices."""
    if "messages" not in body and "prompt" not in body:
        return 0  # embeddings
    bound = _count(body.get("max_completion_tokens"))
    if bound is None:
        bound = _count(body.get("max_tokens"))
    if bound is None:
        bound = default_max_tokens
    choices = _count(body.get("n"))
    return bound * (choices if choices else 1)


def estimate_tokens(body: Mapping[str, Any], default_max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """Tokens to reserve for a request: prompt estimate plus the output bound."""
    return prompt_tokens(body) + output_tokens(body, default_max_tokens)


def _count(value: Any) -> int | None:
    """A non-negative integer field of the request, else None (absent, or not a count)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
