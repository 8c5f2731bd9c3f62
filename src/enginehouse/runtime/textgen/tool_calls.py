"""Tool calls in a model's text: the formats of the chat-template families we can read, and the
answers of requests whose ``tool_choice`` forced a call (constrained to a JSON schema).

A model family writes its calls its own way; which one a model uses is read from its chat
template (what the template renders for an assistant's tool calls is what the model learned):

- ``hermes`` (Hermes, Qwen 2.5/3 and many others): ``<tool_call>{"name": …, "arguments": …}</tool_call>``
- ``mistral``: ``[TOOL_CALLS][{"name": …, "arguments": …}, …]``
- ``llama3_json`` (Llama 3.1–3.3): ``{"name": …, "parameters": …}`` as the whole answer, optionally
  after ``<|python_tag|>``, several separated by ``;``
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from enginehouse.protocol.responses import FunctionCall, ToolCall


@dataclass(frozen=True)
class ToolCallFormat:
    name: str
    # Text that opens the calls; None: the calls are the whole answer (llama3_json).
    marker: str | None

    def split(self, text: str) -> tuple[str, list[ToolCall]]:
        """The answer's content (text before the calls) and its calls; no calls when the text
        holds none that parse (then it is all content)."""
        if self.name == "hermes":
            return _split_hermes(text)
        if self.name == "mistral":
            return _split_mistral(text)
        return _split_llama3(text)

    def content_before_calls(self, text: str) -> int:
        """How much of a partial answer is certainly content: a stream shows it at once and holds
        the rest back until the answer is complete."""
        if self.marker is None:
            # The whole answer is a call when it starts like one.
            stripped = text.lstrip()
            if not stripped or stripped.startswith("{") or "<|python_tag|>".startswith(stripped[:14]):
                return 0
            return len(text)
        found = text.find(self.marker)
        if found != -1:
            return found
        for k in range(min(len(self.marker) - 1, len(text)), 0, -1):
            if text.endswith(self.marker[:k]):
                return len(text) - k
        return len(text)


FORMATS = {
    "hermes": ToolCallFormat("hermes", "<tool_call>"),
    "mistral": ToolCallFormat("mistral", "[TOOL_CALLS]"),
    "llama3_json": ToolCallFormat("llama3_json", None),
}


def detect_format(chat_template: str) -> ToolCallFormat | None:
    """The family whose call format the template renders, or None when it renders none we read."""
    if "<tool_call>" in chat_template:
        return FORMATS["hermes"]
    if "[TOOL_CALLS]" in chat_template:
        return FORMATS["mistral"]
    if "<|python_tag|>" in chat_template or ('"parameters"' in chat_template and "tool_call" in chat_template):
        return FORMATS["llama3_json"]
    return None


def forced_calls(text: str, forced_name: str | None) -> list[ToolCall] | None:
    """The calls in a constrained answer: ``[{"name", "parameters"}, …]`` for ``required``, or
    the arguments object of the function ``forced_name`` names. None when the answer is not
    complete JSON (it ran out of tokens)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if forced_name is not None:
        return [_call(forced_name, value)]
    if not isinstance(value, list):
        return None
    return [_call(str(item["name"]), item.get("parameters", {})) for item in value if isinstance(item, dict)]


def _call(name: str, arguments: Any) -> ToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(function=FunctionCall(name=name, arguments=text))


def _calls_from(items: list[Any], arguments_key: str) -> list[ToolCall] | None:
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        calls.append(_call(item["name"], item.get(arguments_key, item.get("arguments", {}))))
    return calls


_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def _split_hermes(text: str) -> tuple[str, list[ToolCall]]:
    start = text.find("<tool_call>")
    if start == -1:
        return text, []
    items = []
    for body in _HERMES_CALL.findall(text[start:]):
        try:
            items.append(json.loads(body))
        except ValueError:
            return text, []
    calls = _calls_from(items, "arguments")
    return (text[:start].rstrip(), calls) if calls else (text, [])


def _split_mistral(text: str) -> tuple[str, list[ToolCall]]:
    start = text.find("[TOOL_CALLS]")
    if start == -1:
        return text, []
    try:
        items = json.loads(text[start + len("[TOOL_CALLS]"):].strip())
    except ValueError:
        return text, []
    calls = _calls_from(items if isinstance(items, list) else [items], "arguments")
    return (text[:start].rstrip(), calls) if calls else (text, [])


def _split_llama3(text: str) -> tuple[str, list[ToolCall]]:
    body = text.strip().removeprefix("<|python_tag|>").strip()
    if not body.startswith("{"):
        return text, []
    decoder = json.JSONDecoder()
    items, position = [], 0
    while position < len(body):
        try:
            item, position = decoder.raw_decode(body, position)
        except ValueError:
            return text, []
        items.append(item)
        while position < len(body) and body[position] in " \t\r\n;":
            position += 1
    calls = _calls_from(items, "parameters")
    return ("", calls) if calls else (text, [])
