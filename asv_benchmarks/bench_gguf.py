"""GGUF reading: whole-file load (header parse + memory map) and metadata access."""
import os
import tempfile

import numpy as np

from abi.gguf import GGUFWriter, load
from abi.models_hub import resolve_model


class GGUFLoad:
    timeout = 120

    def setup(self):
        self.path = str(resolve_model(None))

    def time_load_default_model(self):
        load(self.path)

    def peakmem_load_default_model(self):
        load(self.path)

    def time_metadata_parse_only(self):
        load(self.path).metadata["tokenizer.ggml.tokens"][-1]


class GGUFWrite:
    def setup(self):
        self.dir = tempfile.mkdtemp()
        self.tokens = [f"tok{i}" for i in range(50000)]
        self.weight = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)

    def teardown(self):
        for name in os.listdir(self.dir):
            os.remove(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def time_write_vocab_and_tensor(self):
        w = GGUFWriter(os.path.join(self.dir, "w.gguf"))
        w.add_metadata("tokenizer.ggml.tokens", self.tokens)
        w.add_tensor("w", self.weight)
        w.write()
