"""Personas: request/response types and MultiPersonaConfig (defaults, YAML, validation)."""
from __future__ import annotations

import pytest

from abi.errors import ConfigError, InvalidRequestError
from abi.personas import (
    AbbeyConfig, EmpathyLevel, MultiPersonaConfig, Persona, PersonaRequest, PersonaResponse,
    ResponseDepth,
)


def test_ai_alias_is_the_same_module():
    import abi.ai.personas
    import abi.personas

    assert abi.ai.personas is abi.personas
    assert abi.ai.personas.MultiPersonaSystem is abi.personas.MultiPersonaSystem


def test_request_defaults_and_persona_parsing():
    r = PersonaRequest("Help me understand memory management in Zig", "user-123")
    assert r.session_id is None and r.persona is None
    assert PersonaRequest("x", "u", persona="AVIVA").persona is Persona.AVIVA
    assert Persona.ABBEY == "abbey" and str(Persona.ABI) == "abi"


@pytest.mark.parametrize("kwargs", [
    {"content": "", "user_id": "u"},
    {"content": "   ", "user_id": "u"},
    {"content": 5, "user_id": "u"},
    {"content": "x" * 100_001, "user_id": "u"},
    {"content": "hi", "user_id": ""},
    {"content": "hi", "user_id": "u\x00"},
    {"content": "hi", "user_id": "u", "session_id": ""},
    {"content": "hi", "user_id": "u", "persona": "bob"},
])
def test_bad_requests_are_typed_errors(kwargs):
    with pytest.raises(InvalidRequestError):
        PersonaRequest(**kwargs)


def test_response_json_starts_with_the_reference_fields():
    r = PersonaResponse("Recursion is ...", Persona.ABBEY, 0.92, 450.0, "rule x")
    d = r.to_dict()
    assert list(d)[:4] == ["content", "persona", "confidence", "latency_ms"]
    assert d["persona"] == "abbey" and d["confidence"] == 0.92 and d["latency_ms"] == 450.0


def test_config_defaults_follow_the_reference():
    cfg = MultiPersonaConfig()
    assert cfg.default_persona is Persona.ABBEY
    assert cfg.enable_dynamic_routing is True
    assert cfg.routing_confidence_threshold == 0.5
    assert cfg.backend == "local"
    assert cfg.aviva.cite_sources is True and cfg.aviva.skip_preamble is True
    assert cfg.abbey.empathy_level is EmpathyLevel.MEDIUM


def test_config_from_reference_values():
    cfg = MultiPersonaConfig(default_persona="abbey", enable_dynamic_routing=True,
                             routing_confidence_threshold=0.5,
                             abbey={"empathy_level": "high", "response_depth": "thorough"},
                             aviva={"cite_sources": True, "skip_preamble": True},
                             backend="echo")
    assert cfg.abbey.empathy_level is EmpathyLevel.HIGH
    assert cfg.abbey.response_depth is ResponseDepth.THOROUGH
    assert isinstance(cfg.abbey, AbbeyConfig)


def test_config_from_yaml(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "rules.yaml").write_text("rules: []\n")
    path = tmp_path / "personas.yaml"
    path.write_text(
        "default_persona: aviva\n"
        "enable_dynamic_routing: false\n"
        "routing_confidence_threshold: 0.7\n"
        "backend: echo\n"
        "rules: rules.yaml\n"
        "abbey: {empathy_level: low, response_depth: concise}\n"
        "aviva: {cite_sources: false, skip_preamble: false, knowledge_paths: [docs]}\n"
        "endpoints:\n"
        "  aviva: [{backend: echo, weight: 2}, {backend: echo, model: other}]\n"
        "alerts: [{name: slow, metric: latency_p99_ms, threshold: 100}]\n")
    cfg = MultiPersonaConfig.from_yaml(path)
    assert cfg.default_persona is Persona.AVIVA and cfg.enable_dynamic_routing is False
    assert cfg.routing_confidence_threshold == 0.7
    assert cfg.rules == str(tmp_path / "rules.yaml")
    assert cfg.aviva.knowledge_paths == [str(tmp_path / "docs")]
    assert cfg.abbey.empathy_level is EmpathyLevel.LOW
    assert [e.weight for e in cfg.endpoint_pool(Persona.AVIVA)] == [2.0, 1.0]
    assert [e.backend for e in cfg.endpoint_pool(Persona.ABBEY)] == ["echo"]
    assert cfg.to_dict()["abbey"] == {"empathy_level": "low", "response_depth": "concise",
                                      "temperature": 0.7}


@pytest.mark.parametrize("kwargs,field", [
    ({"default_persona": "bob"}, "default_persona"),
    ({"routing_confidence_threshold": 1.5}, "routing_confidence_threshold"),
    ({"routing_confidence_threshold": "high"}, "routing_confidence_threshold"),
    ({"backend": "gpt"}, "backend"),
    ({"abbey": {"empathy_level": "extreme"}}, "abbey.empathy_level"),
    ({"abbey": {"warmth": 3}}, "abbey.warmth"),
    ({"aviva": {"retrieval": "grep"}}, "aviva.retrieval"),
    ({"aviva": {"cite_sources": "yes"}}, "aviva.cite_sources"),
    ({"policy": {"actions": {"violence": "ignore"}}}, "policy.actions.violence"),
    ({"policy": {"actions": {"spam": "block"}}}, "policy.actions.spam"),
    ({"endpoints": {"bob": [{"backend": "echo"}]}}, "endpoints.bob"),
    ({"endpoints": {"abbey": []}}, "endpoints.abbey"),
    ({"routing_mode": "random"}, "routing_mode"),
    ({"health": {"degraded_error_rate": 0.6, "unhealthy_error_rate": 0.5}},
     "health.unhealthy_error_rate"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        MultiPersonaConfig(**kwargs)
    assert info.value.field == field


def test_config_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("colour: blue\n")
    with pytest.raises(ConfigError, match="unknown config setting"):
        MultiPersonaConfig.from_yaml(bad)
    with pytest.raises(ConfigError):
        MultiPersonaConfig.from_yaml(tmp_path / "missing.yaml")


def test_config_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ABI_PERSONAS_CONFIG", raising=False)
    monkeypatch.setenv("ABI_PERSONA_BACKEND", "echo")
    assert MultiPersonaConfig.from_env().backend == "echo"
    path = tmp_path / "p.yaml"
    path.write_text("backend: echo\ndefault_persona: aviva\n")
    monkeypatch.setenv("ABI_PERSONAS_CONFIG", str(path))
    assert MultiPersonaConfig.from_env().default_persona is Persona.AVIVA
