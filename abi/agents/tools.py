"""Tools an agent may call: Python callables (their JSON schema from the signature, through
pydantic) or ``(definition, callable)`` pairs with an OpenAI-style definition; and running
one call, its errors turned into a result the model reads."""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable

from abi.errors import ToolCallError


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict
    fn: Callable[..., Any]

    @classmethod
    def of(cls, spec) -> "Tool":
        if isinstance(spec, Tool):
            return spec
        if isinstance(spec, tuple) and len(spec) == 2 and callable(spec[1]):
            definition, fn = spec
            func = definition.get("function", definition) if isinstance(definition, dict) else None
            if not isinstance(func, dict) or not isinstance(func.get("name"), str):
                raise ToolCallError("a tool definition needs function.name", field="tools")
            return cls(func["name"], func.get("description", ""),
                       func.get("parameters") or {"type": "object", "properties": {}}, fn)
        if callable(spec):
            return cls(spec.__name__, inspect.getdoc(spec) or "", _schema_of(spec), spec)
        raise ToolCallError(f"a tool is a callable or a (definition, callable) pair, not "
                            f"{type(spec).__name__}", field="tools")

    def definition(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def run(self, arguments: str) -> str:
        """The call's result as text; a failure is reported to the model, not raised."""
        try:
            args = json.loads(arguments) if arguments.strip() else {}
            if not isinstance(args, dict):
                raise TypeError("arguments must be a JSON object")
            result = self.fn(**args)
        except Exception as exc:  # the model reads what went wrong and may try again
            return f"error: {type(exc).__name__}: {exc}"
        return result if isinstance(result, str) else json.dumps(result, default=str)


def _schema_of(fn) -> dict:
    """The arguments' JSON schema, from the annotations (pydantic reads them)."""
    from pydantic import create_model

    fields = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ToolCallError(f"tool {fn.__name__!r}: *args/**kwargs cannot be described",
                                field="tools")
        annotation = Any if p.annotation is p.empty else p.annotation
        fields[name] = (annotation, ... if p.default is p.empty else p.default)
    schema = create_model(f"{fn.__name__}_args", **fields).model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema
