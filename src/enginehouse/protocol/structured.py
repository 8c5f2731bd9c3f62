"""Structured output on the wire: ``response_format``, ``tools`` and ``tool_choice``, and the
JSON schema each turns into for constrained decoding (a ``Guide``).

The schemas here are plain JSON Schema; the replica's grammar engine compiles them and refuses
what it cannot enforce, so a request is either constrained exactly as asked or answered 400.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from enginehouse.protocol.sampling import Guide

# OpenAI's rule for function and schema names.
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOOLS = 128


class StrictWire(BaseModel):
    """A wire object: unknown fields are refused and types are not coerced (``"false"`` is not
    a boolean), so nothing a client sends is silently ignored or reinterpreted."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class FunctionDefinition(StrictWire):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    # A JSON schema for the arguments; absent means "no arguments" (an empty object).
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def arguments_schema(self) -> dict[str, Any]:
        if self.parameters is not None:
            return self.parameters
        return {"type": "object", "properties": {}, "additionalProperties": False}


class Tool(StrictWire):
    type: Literal["function"]
    function: FunctionDefinition


class ToolChoiceFunction(StrictWire):
    name: str


class NamedToolChoice(StrictWire):
    type: Literal["function"]
    function: ToolChoiceFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ResponseFormatText(StrictWire):
    type: Literal["text"]


class ResponseFormatJsonObject(StrictWire):
    type: Literal["json_object"]


class JsonSchemaFormat(StrictWire):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True)

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    # Always enforced: a constrained answer either fits the schema or is refused up front.
    strict: bool | None = None


class ResponseFormatJsonSchema(StrictWire):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def response_format_guide(response_format: ResponseFormatText | ResponseFormatJsonObject
                          | ResponseFormatJsonSchema | None) -> Guide | None:
    if isinstance(response_format, ResponseFormatJsonObject):
        return _json_guide(_ANY_OBJECT)
    if isinstance(response_format, ResponseFormatJsonSchema):
        schema = response_format.json_schema.schema_
        return _json_guide(schema if schema is not None else _ANY_OBJECT)
    return None


def forced_tool(tools: list[Tool], choice: ToolChoice | None) -> Tool | None:
    """The one tool a named ``tool_choice`` forces (validation made sure it exists)."""
    if not isinstance(choice, NamedToolChoice):
        return None
    return next(tool for tool in tools if tool.function.name == choice.function.name)


def tool_call_guide(tools: list[Tool], choice: ToolChoice | None, parallel: bool) -> Guide | None:
    """The constraint a ``required`` or named ``tool_choice`` puts on the answer.

    ``required``: a JSON array of one or more ``{"name", "parameters"}`` objects, each naming
    one of the tools with arguments that fit its schema (at most one when ``parallel`` is false).
    A named function: just that function's arguments object.
    """
    named = forced_tool(tools, choice)
    if named is not None:
        return _json_guide(named.function.arguments_schema())
    if choice != "required":
        return None
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.function.name},
                "parameters": tool.function.arguments_schema(),
            },
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    array: dict[str, Any] = {"type": "array", "items": {"anyOf": calls}, "minItems": 1}
    if not parallel:
        array["maxItems"] = 1
    return _json_guide(array)


def _json_guide(schema: dict[str, Any]) -> Guide:
    return Guide(kind="json_schema", spec=json.dumps(schema, separators=(",", ":")))
