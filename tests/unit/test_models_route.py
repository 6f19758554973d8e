"""`GET /v1/models` through the real API handler (the sample API Gateway event of events/), with the use cases on
in-memory fakes: the reply is what docs/openapi.yaml documents, cacheable for a few minutes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml

from functions.api import app as api
from wanflow.capabilities import models_in_region
from wanflow_tools.fakes import FakeWorld, fake_settings

REPO = Path(__file__).resolve().parents[2]
OPENAPI = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())


def invoke(world: FakeWorld, monkeypatch: pytest.MonkeyPatch, event_name: str) -> dict[str, Any]:
    monkeypatch.setattr(api, "dependencies", lambda: world.deps)
    event = json.loads((REPO / "events" / event_name).read_text())
    context = SimpleNamespace(
        function_name="wanflow-api",
        memory_limit_in_mb=512,
        aws_request_id="request-1",
        invoked_function_arn="arn:aws:lambda:ap-southeast-1:123456789012:function:wanflow-api",
    )
    return api.lambda_handler(event, context)


def schema_of(name: str) -> jsonschema.Draft202012Validator:
    """The named schema of docs/openapi.yaml, its references resolved within the document."""
    root = {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}
    return jsonschema.Draft202012Validator(root)


@pytest.mark.parametrize("region", ["ap-southeast-1", "us-east-1"])
def test_the_catalog_route_answers_the_documented_shape_with_the_regions_models(
    monkeypatch: pytest.MonkeyPatch, region: str
) -> None:
    world = FakeWorld(settings=fake_settings(dashscope_region=region, default_model="wan2.6-i2v"))
    response = invoke(world, monkeypatch, "api-list-models.json")
    assert response["statusCode"] == 200, response
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["headers"]["Cache-Control"] == "private, max-age=300"
    body = json.loads(response["body"])
    schema_of("ModelCatalog").validate(body)
    assert sorted(model["name"] for model in body["models"]) == models_in_region(region)
    assert body["region"]["id"] == region and body["default_model"] == "wan2.6-i2v"


def test_the_documented_example_is_what_the_route_answers_for_its_first_model(monkeypatch: pytest.MonkeyPatch) -> None:
    example = OPENAPI["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["example"]
    schema_of("ModelCatalog").validate(example)
    body = json.loads(invoke(FakeWorld(), monkeypatch, "api-list-models.json")["body"])
    assert example["models"] == body["models"][:1]
    assert {key: value for key, value in example.items() if key != "models"} == {
        key: value for key, value in body.items() if key != "models"
    }


def test_a_schema_breach_is_caught() -> None:
    # The check above would notice a reply that left out a field or typed it wrongly.
    example = OPENAPI["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["example"]
    broken = json.loads(json.dumps(example))
    broken["models"][0]["price_usd_per_second"]["720P"]["audio"] = "0.05"
    del broken["models"][0]["durations"]
    assert len(list(schema_of("ModelCatalog").iter_errors(broken))) == 2
