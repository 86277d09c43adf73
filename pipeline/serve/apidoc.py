"""The servers' OpenAPI 3.1 documents, kept as data in `openapi/*.yaml` beside this module
(the package `pipeline.serve.openapi`, shipped in the wheel) and served at GET /openapi.json.

The routes, parameters and answers are written down by hand; the shapes of the records an
API decodes or encodes with msgspec come from those structs, and the bounds it enforces
from its settings (`@name` in the YAML), so the document says what the code does rather
than what it did when the document was written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from string import Template
from typing import Any

import msgspec
import yaml
from aiohttp import web
from aiohttp.typedefs import Handler

from pipeline.serve import openapi

PATH = "/openapi.json"
_REF = "#/components/schemas/{name}"


class _Bounds(Template):
    """`@max_descriptors`: `$` is taken, by `$ref`."""

    delimiter = "@"


def load(name: str, structs: Iterable[type] = (), **bounds: int) -> dict[str, Any]:
    """`openapi/<name>.yaml` with `bounds` filled in and a schema for each of `structs`
    added to its components (a struct named like a schema written by hand is an error:
    one of the two would be silently ignored)."""
    text = resources.files(openapi).joinpath(f"{name}.yaml").read_text("utf-8")
    document: dict[str, Any] = yaml.safe_load(_Bounds(text).substitute(bounds))
    _, generated = msgspec.json.schema_components(structs, ref_template=_REF)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    if clash := schemas.keys() & generated.keys():
        raise ValueError(f"openapi/{name}.yaml writes out the schemas of structs: {sorted(clash)}")
    schemas.update(generated)
    return document


def route(document: dict[str, Any]) -> Handler:
    """The GET /openapi.json handler serving `document` (encoded once)."""
    body = json.dumps(document).encode()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return openapi
