"""The OpenAPI document is generated from the message types and the route table."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Literal

import aiohttp

from aggregator.config import TaskSettings
from aggregator.openapi import schema_of
from aggregator.routes import OPENAPI, OPERATIONS
from edge_sdk.clock import FakeClock
from edge_sdk.protocol import messages as m

from .fleet import running_server


@dataclasses.dataclass(frozen=True)
class Point:
    x: float = dataclasses.field(metadata={"minimum": 0, "maximum": 1})


@dataclasses.dataclass(frozen=True)
class Shape:
    """A test shape."""

    kind: Literal["square", "circle"]
    corners: list[Point]
    label: str | None = None
    tags: dict[str, int] = dataclasses.field(default_factory=dict)
    centre: Point | None = None
    count: int = 3


def test_any_dataclass_becomes_a_schema_with_its_refs_ranges_and_enums():
    components: dict = {}
    assert schema_of(Shape, components) == {"$ref": "#/components/schemas/Shape"}
    shape, point = components["Shape"], components["Point"]
    assert shape["required"] == ["kind", "corners"]
    assert shape["description"] == "A test shape."
    props = shape["properties"]
    assert props["kind"] == {"type": "string", "enum": ["square", "circle"]}
    assert props["corners"] == {"type": "array", "items": {"$ref": "#/components/schemas/Point"}}
    assert props["label"] == {"type": "string", "nullable": True}
    assert props["tags"] == {
        "type": "object",
        "additionalProperties": {"type": "integer", "minimum": -(2**53 - 1), "maximum": 2**53 - 1},
    }
    assert props["centre"] == {"anyOf": [{"$ref": "#/components/schemas/Point"}], "nullable": True}
    assert props["count"]["default"] == 3
    assert point["properties"]["x"] == {"type": "number", "minimum": 0, "maximum": 1}


def test_messages_declare_their_bounds_and_requests_refuse_unknown_keys():
    schemas = OPENAPI["components"]["schemas"]
    enroll = schemas["EnrollRequest"]
    assert enroll["additionalProperties"] is False
    assert enroll["properties"]["public_key"]["format"] == "byte"
    assert enroll["properties"]["public_key"]["minLength"] == 44  # base64 of 32 bytes
    assert schemas["UploadBegin"]["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"
    assert "additionalProperties" not in schemas["UploadAck"]  # replies are open
    for name, schema in schemas.items():
        cls = getattr(m, name, None)
        if cls is not None:
            assert set(schema["properties"]) == {f.name for f in dataclasses.fields(cls)}, name


def test_task_settings_are_typed_in_the_admin_create_request():
    schemas = OPENAPI["components"]["schemas"]
    settings = schemas["TaskCreate"]["properties"]["settings"]
    assert settings == {"anyOf": [{"$ref": "#/components/schemas/TaskSettings"}], "nullable": True}
    typed = schemas["TaskSettings"]["properties"]
    assert set(typed) == {f.name for f in dataclasses.fields(TaskSettings)}
    assert typed["sync"] == {"$ref": "#/components/schemas/SyncSettings"}
    assert schemas["SyncSettings"]["properties"]["goal"]["type"] == "integer"
    body = OPENAPI["paths"]["/v1/admin/tasks"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TaskCreate"
    }


def test_every_operation_is_documented_with_its_security_and_error_body(tmp_path):
    assert {(op.method.lower(), op.path) for op in OPERATIONS} == {
        (method, path) for path, ops in OPENAPI["paths"].items() for method in ops
    }
    device = OPENAPI["paths"]["/v1/checkin"]["post"]
    assert device["security"] == [{"deviceToken": []}]
    assert device["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    version = OPENAPI["paths"]["/v1/tasks/{task_id}/model"]["get"]["parameters"][1]
    assert version["schema"]["maximum"] == 2**53 - 1

    async def served():
        async with (
            running_server(tmp_path / "d", FakeClock()) as (url, _),
            aiohttp.ClientSession() as session,
        ):
            async with session.get(url + "/openapi.json") as r:
                return await r.json()

    assert asyncio.run(served()) == OPENAPI
