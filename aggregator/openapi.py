"""The OpenAPI document, generated from the route table and the message types: any
dataclass becomes a JSON schema (str, int, float, bool, bytes as base64, X | None,
Literal enums, lists, tuples, dicts, nested dataclasses), with the ranges and lengths
its fields declare as JSON-schema keywords in `field(metadata=...)`."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

from edge_sdk.protocol.messages import ErrorBody, TaskCreate, TaskDescription
from edge_sdk.protocol.typedjson import JSON_INT, SCHEMA_KEYWORDS, type_hints

from .config import TaskSettings

__all__ = ["Operation", "Query", "document", "schema_of"]

BINARY = "binary"  # a body or reply of raw bytes (the wire format), not JSON
_KEYWORDS = (*SCHEMA_KEYWORDS, "description")
# fields whose JSON stays an object in the message and is typed by another dataclass
FIELD_TYPES: dict[tuple[type, str], type] = {
    (TaskCreate, "settings"): TaskSettings,
    (TaskDescription, "settings"): TaskSettings,
}


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict
    required: bool = False


@dataclass(frozen=True)
class Operation:
    """One route: served by `handler`, documented from `body` and `reply` (a dataclass,
    BINARY or None). auth: "device" (bearer token), "admin" (X-Admin-Token) or None."""

    method: str
    path: str
    handler: Callable
    summary: str
    auth: Literal["device", "admin"] | None = None
    body: Any = None
    reply: Any = None
    status: int = 200
    query: tuple[Query, ...] = ()


def schema_of(kind, components: dict[str, dict], meta: typing.Mapping = {}) -> dict:
    """The JSON schema of a field type; dataclasses are added to `components` by name and
    referenced. Works for any dataclass."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    extra = {k: meta[k] for k in _KEYWORDS if k in meta}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        schema = (
            schema_of(inner[0], components, meta)
            if len(inner) == 1
            else {"anyOf": [schema_of(a, components) for a in inner]}
        )
        if type(None) in args:
            schema = (
                {"anyOf": [schema], "nullable": True}
                if "$ref" in schema
                else schema | {"nullable": True}
            )
        return schema
    if origin is Literal:
        names = {bool: "boolean", int: "integer", str: "string", float: "number"}
        return {"type": names[type(args[0])], "enum": list(args)} | extra
    if dataclasses.is_dataclass(kind):
        _component(kind, components)
        ref = {"$ref": f"#/components/schemas/{kind.__name__}"}
        return (
            {"allOf": [ref], "description": extra["description"]} if "description" in extra else ref
        )
    if kind is bool:
        return {"type": "boolean"} | extra
    if kind is int:
        return {"type": "integer", "minimum": -JSON_INT, "maximum": JSON_INT} | extra
    if kind is float:
        return {"type": "number"} | extra
    if kind is str:
        return {"type": "string"} | extra
    if kind is bytes:  # lengths are of the decoded bytes: base64 text is 4/3 as long
        schema = {"type": "string", "format": "byte"}
        for key in ("minLength", "maxLength"):
            if key in extra:
                schema[key] = 4 * -(-extra[key] // 3)
        return schema | ({"description": extra["description"]} if "description" in extra else {})
    if kind is dict or kind is typing.Any:
        return {"type": "object"} | extra
    if origin is dict:
        item = schema_of(args[1], components)
        keys = {"description": "keys are decimal integers"} if args[0] is int else {}
        return {"type": "object", "additionalProperties": item} | keys | extra
    if origin is list:
        return {"type": "array", "items": schema_of(args[0], components)} | extra
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
        return {"type": "array", "items": schema_of(args[0], components)} | extra
    if origin is tuple:
        items = [schema_of(a, components) for a in args]
        unique = [s for i, s in enumerate(items) if s not in items[:i]]
        return {
            "type": "array",
            "items": unique[0] if len(unique) == 1 else {"anyOf": unique},
            "minItems": len(args),
            "maxItems": len(args),
        } | extra
    raise TypeError(f"no JSON schema for {kind!r}")


def _component(cls, components: dict[str, dict]) -> None:
    name = cls.__name__
    if name in components:
        return
    components[name] = {}  # placeholder: a recursive type refers to itself
    hints = type_hints(cls)
    properties, required = {}, []
    for f in dataclasses.fields(cls):
        kind = FIELD_TYPES.get((cls, f.name), hints[f.name])
        if (cls, f.name) in FIELD_TYPES and type(None) in typing.get_args(hints[f.name]):
            kind = kind | None
        schema = schema_of(kind, components, f.metadata)
        default = f.default
        if default is not dataclasses.MISSING and isinstance(default, (bool, int, float, str)):
            schema = schema | {"default": default}
        properties[f.name] = schema
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    doc = {"type": "object", "properties": properties}
    if required:
        doc["required"] = required
    if not getattr(cls, "_open", True):
        doc["additionalProperties"] = False
    if cls.__doc__ and not cls.__doc__.startswith(f"{name}("):
        doc["description"] = " ".join(cls.__doc__.split())
    components[name] = doc


_ERRORS = {
    "device": (400, 401, 403, 404, 409, 413, 429, 503),
    "admin": (400, 401, 403, 404, 409, 503),
    None: (400, 403, 429, 503),
}
_ERROR_TEXT = {
    400: "malformed request (error.code names the problem, error.field the path)",
    401: "missing or unknown credentials",
    403: "credentials of the wrong kind",
    404: "unknown task, version or upload",
    409: "a conflict with the task's state",
    413: "over a size limit",
    429: "rate limited; Retry-After",
    503: "with a shared store: the process leading the task, or the database, "
    "cannot be reached now; Retry-After",
}


def document(operations: list[Operation], path_patterns: dict[str, str]) -> dict:
    """The OpenAPI 3.0 document of these operations; `path_patterns` are the regular
    expressions the router holds string path parameters to."""
    components: dict[str, dict] = {}
    error = schema_of(ErrorBody, components)
    paths: dict[str, dict] = {}
    for op in operations:
        entry: dict = {
            "summary": op.summary,
            "operationId": op.handler.__name__
            + ("" if op.method == "GET" else "_" + op.method.lower()),
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _path_schema(name, path_patterns),
            }
            for name in re.findall(r"{(\w+)}", op.path)
        ]
        params += [
            {"name": q.name, "in": "query", "required": q.required, "schema": q.schema}
            for q in op.query
        ]
        if params:
            entry["parameters"] = params
        if op.auth:
            entry["security"] = [{"deviceToken": []} if op.auth == "device" else {"adminToken": []}]
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": _content(op.body, components)}
        responses = {str(op.status): {"description": "ok"}}
        if op.reply is not None:
            responses[str(op.status)]["content"] = _content(op.reply, components)
        for status in _ERRORS[op.auth]:
            responses.setdefault(
                str(status),
                {
                    "description": _ERROR_TEXT[status],
                    "content": {"application/json": {"schema": error}},
                },
            )
        entry["responses"] = responses
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.0.3",
        "info": {"title": "edge-fl aggregator", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "deviceToken": {"type": "http", "scheme": "bearer"},
                "adminToken": {"type": "apiKey", "in": "header", "name": "X-Admin-Token"},
            },
        },
    }


def _path_schema(name: str, path_patterns: dict[str, str]) -> dict:
    if name == "version":
        return {"type": "integer", "minimum": 0, "maximum": JSON_INT}
    return {"type": "string", "pattern": f"^{path_patterns[name]}$"}


def _content(kind, components: dict) -> dict:
    if kind == BINARY:
        return {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    if isinstance(kind, str):  # another media type, e.g. text/html
        return {kind: {"schema": {"type": "string"}}}
    return {"application/json": {"schema": schema_of(kind, components)}}
