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
        self.model = abi.llm.load_model(resolve_model(None), n_ctx=1024)
        self.prompt = _TOOL.prompt_ids(self.model.tokenizer.token_types, 512)
        self.model.forward(self.prompt[:8], self.model.new_cache())  # compile, fault pages in

    def track_prefill_512(self):
        return _TOOL.abi_prefill_tps(self.model, self.prompt)

    def track_decode_128(self):
        stats, _ = _TOOL.abi_decode(self.model, _TOOL.PROMPT, 128)
        return stats.tokens_per_second()

    track_prefill_512.unit = track_decode_128.unit = "tokens/s"
