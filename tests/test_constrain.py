"""Constrained decoding (abi.llm.constrain, llguidance): every schema of a varied set yields
output that parses and validates with jsonschema on the default model and on Gemma 3; regex,
GBNF and Lark grammars; the length limit; and typed errors for what cannot be enforced."""
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest

import abi.llm
from abi.errors import ConfigError, GrammarError
from abi.llm import Grammar, StreamingConfig

CASES = json.loads((Path(__file__).parent / "data" / "schemas.json").read_text())
GEMMA = Path(os.environ.get("ABI_MODEL_DIR", "~/.cache/abi/models")).expanduser() / "gemma3-270m-q4_k_m.gguf"


@pytest.fixture(scope="module")
def engine(default_model_path):
    return abi.llm.Engine.from_model(abi.llm.load_model(default_model_path, n_ctx=1024))


def _run(engine, prompt, max_tokens=120, **options):
    response = engine.chat([{"role": "user", "content": prompt}], stream=True,
                           max_tokens=max_tokens, temperature=0, **options)
    for _ in response:
        pass
    return response.text, response.get_stats()


def _json_schema(case, strict=True):
    return {"type": "json_schema",
            "json_schema": {"name": case["name"], "schema": case["schema"], "strict": strict}}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_schema_output_validates(engine, case):
    text, stats = _run(engine, case["prompt"] + " Answer in JSON.", response_format=_json_schema(case))
    assert stats.finish_reason == "stop" and stats.constraint_complete is True
    jsonschema.validate(json.loads(text), case["schema"])


@pytest.mark.slow
@pytest.mark.skipif(not GEMMA.exists(), reason="no gemma3-270m GGUF in the model cache")
def test_schema_set_on_gemma3():
    """SentencePiece with byte fallback and a 262k vocabulary: the same set, 100 %."""
    gemma = abi.llm.Engine.from_model(abi.llm.load_model(GEMMA, n_ctx=1024))
    for case in CASES:
        text, stats = _run(gemma, case["prompt"] + " Answer in JSON.",
                           response_format=_json_schema(case, strict=False))
        assert stats.finish_reason == "stop", (case["name"], text)
        jsonschema.validate(json.loads(text), case["schema"])


def test_json_object_and_pydantic_model(engine):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    text, _ = _run(engine, "Name a city.", response_format={"type": "json_object"})
    assert isinstance(json.loads(text), dict)
    text = engine.model.generate("A city as JSON:", response_format=City, max_tokens=60, temperature=0)
    City.model_validate_json(text)


@pytest.mark.parametrize("grammar, pattern", [
    (Grammar.regex(r"(yes|no)"), r"(yes|no)"),
    (Grammar.regex(r"[0-9]{3}-[0-9]{4}"), r"[0-9]{3}-[0-9]{4}"),
    (Grammar.regex(r"[àéîõü]{2,4}"), r"[àéîõü]{2,4}"),  # multi-byte characters across tokens
    (Grammar.gbnf('root ::= "The answer is " [0-9]+ "."'), r"The answer is [0-9]+\."),
    (Grammar.gbnf('root ::= item ("," item){0,3}\nitem ::= "red" | "green" | "blue"'),
     r"(red|green|blue)(,(red|green|blue)){0,3}"),
    (Grammar.lark('start: "Colour: " COLOUR\nCOLOUR: "red" | "blue"'), r"Colour: (red|blue)"),
])
def test_grammars(engine, grammar, pattern):
    text, stats = _run(engine, "Answer the question: what is six times seven?", max_tokens=40,
                       grammar=grammar)
    assert re.fullmatch(pattern, text), text
    assert stats.constraint_complete is True


def test_grammar_text_in_streaming_config(engine):
    """StreamingConfig(grammar=text): GBNF, or Lark when it has a start rule."""
    cfg = StreamingConfig(grammar='root ::= "A" | "B"', max_tokens=5, temperature=0)
    assert cfg.grammar.kind == "gbnf"
    assert StreamingConfig(grammar='start: "x"').grammar.kind == "lark"
    response = engine.create_streaming_response("Pick a letter:", cfg)
    assert "".join(ev.text or "" for ev in response) in ("A", "B")


def test_length_limit_says_length_and_incomplete(engine):
    case = next(c for c in CASES if c["name"] == "nested")
    text, stats = _run(engine, case["prompt"], max_tokens=5, response_format=_json_schema(case))
    assert stats.finish_reason == "length" and stats.constraint_complete is False
    with pytest.raises(ValueError):
        json.loads(text)


def test_unconstrained_generation_reports_no_constraint(engine):
    _, stats = _run(engine, "Hi", max_tokens=3)
    assert stats.constraint_complete is None and stats.constraint_time_ns == 0


@pytest.mark.parametrize("response_format, words", [
    ({"type": "json_schema", "json_schema": {"schema": {"type": "strnig"}}}, "malformed"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object", "if": {}}}}, "if"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "json_schema.schema"),
    ({"type": "xml"}, "xml"),
    ("json", "object"),
])
def test_unenforceable_response_format_is_typed_error(engine, response_format, words):
    with pytest.raises(GrammarError, match=re.escape(words)) as info:
        _run(engine, "Hi", max_tokens=3, response_format=response_format)
    assert info.value.http_status == 400


@pytest.mark.parametrize("grammar", [
    lambda: Grammar.regex(r"\d+("),
    lambda: Grammar.gbnf("root ::= undefined_rule"),
    lambda: Grammar.gbnf("root ::= ("),
    lambda: Grammar.lark("start: nothing_defined"),
    lambda: Grammar.regex(""),
])
def test_grammar_that_does_not_compile_is_typed_error(engine, grammar):
    with pytest.raises(GrammarError):
        _run(engine, "Hi", max_tokens=3, grammar=grammar())


def test_grammar_and_response_format_together_is_an_error(engine):
    with pytest.raises(ConfigError, match="not both"):
        _run(engine, "Hi", max_tokens=3, grammar=Grammar.regex("a"),
             response_format={"type": "json_object"})


def test_vocabulary_bridge_marks_special_tokens(engine):
    """Control tokens are special to llguidance, so no grammar text can produce them."""
    from abi.llm.constrain import lltokenizer

    tok = engine.model.tokenizer
    llt = lltokenizer(tok, engine.model.n_vocab)
    assert llt.vocab_size == engine.model.n_vocab
    assert set(llt.eos_tokens) == set(tok.eog_ids)
    for i in tok.eog_ids:
        assert llt.is_special_token(i)
    ids = tok.encode("Hello, world")
    assert llt.decode_str(ids) == tok.decode(ids)
