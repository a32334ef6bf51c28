"""The persona HTTP API (abi/server/persona_routes.py) on a small app of its own, with the
echo backend."""
from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from abi.errors import Timeout
from abi.personas import MultiPersonaConfig, MultiPersonaSystem
from abi.server import errors, persona_routes


def make_app(router) -> FastAPI:
    """An app with the persona routes and the server's error mapping."""
    app = FastAPI()
    app.include_router(router)
    errors.install(app)
    return app


def make_system(**kwargs) -> MultiPersonaSystem:
    return MultiPersonaSystem(MultiPersonaConfig(backend="echo", **kwargs))


@pytest.fixture()
def client():
    return TestClient(make_app(persona_routes.create_router(make_system)))


def test_chat_auto_routes_with_the_reference_json(client):
    body = {"content": "Help me understand recursion", "user_id": "user-123",
            "session_id": "session-456", "persona": None}
    r = client.post("/api/v1/chat", json=body)
    assert r.status_code == 200
    data = r.json()
    assert list(data)[:4] == ["content", "persona", "confidence", "latency_ms"]
    # the reference's sample shows abbey; technical explanations are Aviva's (issue 22)
    assert data["persona"] == "aviva" and data["content"] == "Echo: Help me understand recursion"
    assert 0.5 <= data["confidence"] <= 1 and data["latency_ms"] > 0
    assert data["session_id"] == "session-456" and data["routing_reason"]


def test_routing_scenarios_over_http(client):
    code = client.post("/api/v1/chat", json={"content": "Write a Rust function that parses "
                                                        "an integer", "user_id": "u"}).json()
    assert code["persona"] == "aviva" and code["query_type"] == "code"
    bad = client.post("/api/v1/chat", json={"content": "how do I make a pipe bomb",
                                            "user_id": "u"}).json()
    assert bad["persona"] == "abi" and bad["blocked"] and bad["policy"] == ["weapons"]
    upset = client.post("/api/v1/chat", json={"content": "I'm so frustrated, my tests keep "
                                                         "failing and nothing works!!"}).json()
    assert upset["persona"] == "abbey" and upset["emotion"] == "frustration"


def test_forced_persona_routes(client):
    a = client.post("/api/v1/chat/abbey", json={"content": "what is 2+2", "user_id": "u"})
    v = client.post("/api/v1/chat/aviva", json={"content": "write a poem", "user_id": "u",
                                                "persona": "abbey"})   # the path wins
    assert a.json()["persona"] == "abbey" and v.json()["persona"] == "aviva"
    assert v.json()["confidence"] == 1.0


@pytest.mark.parametrize("payload,message", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "valid dictionary"),
    (b"{}", "content: Field required"),
    (b'{"content": "", "user_id": "u"}', "content is empty"),
    (b'{"content": "hi", "user_id": "u", "persona": "bob"}', "persona must be one of"),
    (b'{"content": "hi", "mood": "happy"}', "mood: Extra inputs are not permitted"),
    (b'{"content": 12}', "content: Input should be a valid string"),
])
def test_bad_requests_are_400_with_a_typed_error(client, payload, message):
    r = client.post("/api/v1/chat", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert message in err["message"] and err["type"] == "invalid_request_error"


def test_backend_errors_keep_their_status():
    system = make_system(health={"failure_threshold": 100})

    class Down:
        def complete(self, messages, params):
            raise Timeout("the provider did not answer")

        def context_length(self):
            return None

    for balancer in system.balancers.values():
        balancer.endpoints[0].backend = Down()
    c = TestClient(make_app(persona_routes.create_router(system)))
    r = c.post("/api/v1/chat/aviva", json={"content": "hi", "user_id": "u"})
    assert r.status_code == 504 and "did not answer" in r.json()["error"]["message"]
    m = c.get("/api/v1/personas/metrics").json()
    assert m["personas"]["aviva"]["failed_requests"] == 1


def test_personas_listing(client):
    data = client.get("/api/v1/personas").json()
    assert [p["name"] for p in data["personas"]] == ["abi", "abbey", "aviva"]
    assert data["default_persona"] == "abbey" and data["dynamic_routing"] is True
    roles = {p["name"]: p["role"] for p in data["personas"]}
    assert roles == {"abi": "Router/Moderator", "abbey": "Empathetic Polymath",
                     "aviva": "Direct Expert"}


def test_metrics_route(client):
    for text in ("hello", "write a go program", "how tall is everest"):
        client.post("/api/v1/chat", json={"content": text, "user_id": "u"})
    data = client.get("/api/v1/personas/metrics").json()
    assert data["enabled"] is True and data["alerts"] == []
    aviva = data["personas"]["aviva"]
    assert aviva["total_requests"] == 2 and aviva["success_rate"] == 1.0
    assert set(aviva["latency_ms"]) == {"p50", "p90", "p99", "count"}
    assert data["routing"]["routed"] == {"abbey": 1, "aviva": 2}


def test_health_route_healthy_then_unhealthy():
    system = make_system(health={"failure_threshold": 1, "cooldown_s": 600})
    c = TestClient(make_app(persona_routes.create_router(system)))
    r = c.get("/api/v1/personas/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    probe = c.get("/api/v1/personas/health", params={"probe": "true"}).json()
    assert probe["personas"]["abbey"]["endpoints"][0]["calls"] == 1
    system.balancers[next(iter(system.balancers))].endpoints[0].health.record(False, 1.0, "x")
    r = c.get("/api/v1/personas/health")
    assert r.status_code == 503 and r.json()["status"] == "unhealthy"


def test_app_state_and_dependency_override():
    built = []

    def factory():
        built.append(1)
        return make_system(default_persona="aviva")

    app = FastAPI()
    app.state.personas = factory
    app.include_router(persona_routes.router)
    c = TestClient(app)
    assert c.get("/api/v1/personas").json()["default_persona"] == "aviva"
    assert c.get("/api/v1/personas").json()["default_persona"] == "aviva"
    assert built == [1]                                  # the factory ran once

    other = FastAPI()
    other.include_router(persona_routes.router)
    other.dependency_overrides[persona_routes.get_persona_system] = \
        lambda: make_system(default_persona="abi")
    assert TestClient(other).get("/api/v1/personas").json()["default_persona"] == "abi"


def test_openapi_lists_the_six_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/v1/chat", "/api/v1/chat/abbey", "/api/v1/chat/aviva", "/api/v1/personas",
              "/api/v1/personas/metrics", "/api/v1/personas/health"):
        assert p in paths


def test_a_given_local_backend_answers_local_endpoints_and_no_other_model_is_named():
    from abi.errors import ConfigError

    local = object()
    system = MultiPersonaSystem(MultiPersonaConfig(), local=local)
    assert all(b.endpoints[0].backend is local for b in system.balancers.values())
    with pytest.raises(ConfigError, match="other.gguf"):
        MultiPersonaSystem(MultiPersonaConfig(model="other.gguf"), local=local)
