"""The language-model runtime on the default model: load, prefill and decode speed, measured
by tools/bench_vs_llamacpp.py's functions (which also give the ratios against llama.cpp;
asv tracks our history)."""
import abi.llm
from abi.models_hub import resolve_model

from ._tools import load

_TOOL = load("bench_vs_llamacpp")


class Load:
    timeout = 300

    def setup(self):
        self.path = str(resolve_model(None))

    def time_load_and_first_token(self):
        model = abi.llm.load_model(self.path)
        model.forward(model.tokenize("Once upon a time"), model.new_cache())


class Speed:
    timeout = 600
    unit = "tokens/s"

    def setup(self):
        self.model = abi.llm.load_model(resolve_model(None), n_ctx=2112)
        self.prompt = _TOOL.prompt_ids(self.model.tokenizer.token_types, 2048)
        self.model.forward(self.prompt[:8], self.model.new_cache())  # compile, fault pages in

    def track_prefill_512(self):
        return _TOOL.abi_prefill_tps(self.model, self.prompt[:512])

    def track_prefill_2048(self):
        return _TOOL.abi_prefill_tps(self.model, self.prompt)

    def track_decode_128(self):
        stats, _ = _TOOL.abi_decode(self.model, _TOOL.PROMPT, 128)
        return stats.tokens_per_second()

    track_prefill_512.unit = track_prefill_2048.unit = track_decode_128.unit = "tokens/s"


class Constrained:
    """The cost of a JSON-schema constraint: mask time per token, and its share of the generation time (prefill and decode)."""

    timeout = 300
    SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                               "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"], "additionalProperties": False}

    def setup(self):
        self.engine = abi.llm.Engine.from_model(abi.llm.load_model(resolve_model(None), n_ctx=1024))
        self.run()  # builds the vocabulary trie once

    def run(self):
        fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": self.SCHEMA}}
        response = self.engine.chat([{"role": "user", "content": "A big city as JSON."}],
                                    stream=True, response_format=fmt, max_tokens=64, temperature=0)
        for _ in response:
            pass
        return response.get_stats()

    def track_mask_us_per_token(self):
        stats = self.run()
        return stats.constraint_time_ns / 1e3 / max(stats.tokens_generated, 1)

    def track_mask_percent_of_generation(self):
        stats = self.run()
        return 100.0 * stats.constraint_time_ns / max(stats.decode_time_ns + stats.prefill_time_ns, 1)

    track_mask_us_per_token.unit = "us"
    track_mask_percent_of_generation.unit = "percent"
