"""Property-based requests over the server's own OpenAPI spec (schemathesis): data that fits
the spec and data that breaks it, for every operation. The server must answer every one
with a non-5xx status, and a response that fits the spec's own models."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from serve_helpers import serve

pytestmark = pytest.mark.model
MODEL, EMBED = "smollm2-135m-instruct", "all-minilm-l6-v2"
EMBED_PATHS = {"/v1/embeddings", "/api/embed", "/api/embeddings"}


def _spec() -> dict:
    from abi.server import ServeOptions, create_app

    return create_app(ServeOptions(), load=False).openapi()


# the persona routes (tag "personas") have their own tests and their own model
schema = schemathesis.openapi.from_dict(_spec()).exclude(tag="personas")
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=15, deterministic=True)
schema.config.phases.update(phases=["examples", "fuzzing"])


@pytest.fixture(scope="module")
def server(default_model_path):
    # a small context and a 2-token cap keep random prompts and options cheap
    with serve("--model", default_model_path, "--embedding-model", "default", "--ctx", "128",
               "--max-tokens", "2", "--parallel", "2", "--queue", "8") as srv:
        yield srv


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=15)
def test_no_request_gets_a_server_error(case, server):
    # a random model name is a 404 before anything else is looked at: name a served model
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body["model"] = EMBED if case.path in EMBED_PATHS else MODEL
    response = case.call(base_url=server.url, timeout=60)
    assert response.status_code < 500, (response.status_code, response.text[:500])
    content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
    if content_type[0].startswith("application/json"):
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
