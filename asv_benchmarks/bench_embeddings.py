"""Embeddings: abi's Encoder on all-MiniLM-L6-v2 (batches of 32 short sentences), the WordPiece
tokenizer, and the HF -> GGUF conversion. sentence-transformers is compared in
tools/bench_embeddings.py (it needs torch, which asv environments do not install)."""
import time

SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "What is the capital of France?", "Paris is a large city in Europe.", "The weather is lovely today.",
    "It is raining outside and very cold.", "I would like a cup of coffee, please.",
    "She reads a book every evening.", "The train leaves at half past seven.",
    "Our team won the match last night.", "Please send me the report by Friday.",
    "The cat sleeps on the warm windowsill.", "He forgot his keys at the office again.",
    "Fresh bread smells wonderful in the morning.", "The museum opens at ten o'clock.",
    "Children are playing in the park.", "This laptop has a very bright screen.",
    "We planted tomatoes in the garden.", "The river flows gently through the valley.",
    "Can you recommend a good restaurant nearby?", "The meeting was moved to Tuesday.",
    "My phone battery dies too quickly.", "A dog is chasing a red ball.",
    "The concert was louder than expected.", "Stock prices rose sharply this week.",
    "They are building a new bridge downtown.",
]


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
        t0 = time.perf_counter()
        for _ in range(5):
            self.encoder.encode_batch(SENTENCES)
        return 5 * len(SENTENCES) / (time.perf_counter() - t0)

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
