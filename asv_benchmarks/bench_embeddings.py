"""Embeddings: abi's Encoder on all-MiniLM-L6-v2 (batches of 32 short sentences), the WordPiece
tokenizer, and the HF -> GGUF conversion. sentence-transformers is compared in
tools/bench_embeddings.py (it needs torch, which asv environments do not install)."""
from ._tools import load

_TOOL = load("bench_embeddings")   # the sentences and the timed loop of the command line
SENTENCES = _TOOL.SENTENCES


class EncoderSuite:
    timeout = 300

    def setup(self):
        from abi.embeddings import Encoder

        self.encoder = Encoder()  # all-minilm-l6-v2, fetched and converted on first use
        self.encoder.encode_batch(SENTENCES)  # warm-up (binds BLAS, fills caches)

    def time_encode_batch_32(self):
        self.encoder.encode_batch(SENTENCES)

    def time_encode_one(self):
        self.encoder.encode("What is the capital of France?")

    def track_sentences_per_second(self):
        rates, _ = _TOOL.measure(self.encoder.encode_batch, batches=5, rounds=1, join=1,
                                 per_call=_TOOL.BATCH)
        return rates[0]

    track_sentences_per_second.unit = "sentences/s"

    def peakmem_load_encoder(self):
        from abi.embeddings import Encoder

        Encoder()


class WordPieceSuite:
    def setup(self):
        from abi.embeddings import Encoder

        self.tokenizer = Encoder()._backend.tokenizer
        self.texts = SENTENCES * 8

    def time_tokenize_256_sentences(self):
        self.tokenizer.encode_batch(self.texts)
