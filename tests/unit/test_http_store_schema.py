"""The OpenAPI document's Store schema names every field /api/v1/store returns (it
forbids others: a field added to WriterStats without it fails every client that
validates, as the fuzz test's schemathesis does)."""

from __future__ import annotations

from healthmon.http.openapi import document
from healthmon.http.shapes import store_shape
from healthmon.store.writer import WriterStats


def test_store_schema_lists_every_field_of_the_store_shape() -> None:
    schema = document()["components"]["schemas"]["Store"]
    assert schema["additionalProperties"] is False
    shown = set(store_shape(WriterStats()))
    assert shown <= set(schema["properties"]), shown - set(schema["properties"])
    assert set(store_shape(None)) <= set(schema["properties"])
