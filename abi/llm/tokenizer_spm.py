"""SentencePiece-style BPE (``tokenizer.ggml.model == "llama"``), as llama.cpp runs it.

Spaces become ``▁`` (and with ``add_space_prefix`` a space is put in front of the text and
of any text that follows a special token). The text starts as one symbol per character;
every adjacent pair whose concatenation is a piece of the vocabulary is a candidate, and the
candidate whose piece has the highest score is merged first (ties: leftmost). What cannot
be merged into a known piece falls back to byte tokens ``<0xXX>``. ``tokenizers`` has no
model that orders merges by the resulting piece's score, so this is our own code.
"""
from __future__ import annotations

import gc
import heapq
import re
from collections.abc import Mapping
from typing import Any

from ..errors import TokenizerError
from .tokenizer import Tokenizer

SPACE = "\u2581"


class SPMTokenizer(Tokenizer):
    model = "llama"
    _default_ids = {"bos": 1, "eos": 2, "unk": 0}
    _default_add_bos = True
    _default_add_space_prefix = True

    def _pre_init(self, meta: Mapping[str, Any]) -> None:
        scores = meta.get("tokenizer.ggml.scores")
        if scores is None:
            scores = [0.0] * self.n_vocab
        elif (not isinstance(scores, list) or len(scores) < self.n_vocab
              or not all(map((int, float).__contains__, map(type, scores)))):
            raise TokenizerError(f"'tokenizer.ggml.scores' must give a score for each of the "
                                 f"{self.n_vocab} tokens")
        self.scores: list[float] = scores[:self.n_vocab] if len(scores) > self.n_vocab else scores
        self._byte_ids: list[int | None] | None = None
        self._splitter = None
        self._chunk_cache: dict[str, list[int]] = {}

    def _encode_fragments(self, fragments: list[str | int], out: list[int]) -> None:
        prev_special = True  # the text's start counts as following a special token
        for frag in fragments:
            if isinstance(frag, int):
                out.append(frag)
                prev_special = True
            else:
                if self.add_space_prefix and prev_special:
                    frag = " " + frag
                self._merge(frag.replace(" ", SPACE), out)
                prev_special = False

    def _merge(self, text: str, out: list[int]) -> None:
        """Merges never cross a boundary that no piece spans, so the text is cut before
        each word-initial ``▁`` that no piece joins to the character before it, and each
        chunk is merged (and cached) alone: the same result, without one huge queue."""
        if len(text) < 32:
            if text:
                self._merge_symbols(text, out)
            return
        splitter = self._splitter or self._make_splitter()
        cache = self._chunk_cache
        if len(cache) > 50_000:
            cache.clear()
        gc_was_on = gc.isenabled()
        gc.disable()  # many short-lived containers: collections would only slow this down
        try:
            for chunk in splitter(text):
                ids = cache.get(chunk)
                if ids is None:
                    ids = cache[chunk] = []
                    self._merge_symbols(chunk, ids)
                out.extend(ids)
        finally:
            if gc_was_on:
                gc.enable()

    def _make_splitter(self):
        # characters that some piece joins to a following ▁ (a superset: joined with \x00)
        glue = set(re.findall(f"([^{SPACE}]){SPACE}", "\x00".join(self.tokens)))
        keep = "".join(re.escape(c) for c in sorted(glue | {SPACE}))
        self._splitter = re.compile(f"(?<=[^{keep}])(?={SPACE})").split
        return self._splitter

    def _merge_symbols(self, text: str, out: list[int]) -> None:
        n = len(text)
        vocab, scores = self._text_to_id, self.scores
        # symbol i starts at character i; merging only ever grows a symbol to the right
        length = [1] * n
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap = []
        for i in range(n - 1):
            tid = vocab.get(text[i:i + 2])
            if tid is not None:
                heap.append((-scores[tid], i, i + 1, 2))
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            _, left, right, size = pop(heap)
            n_left, n_right = length[left], length[right]
            if n_left == 0 or n_right == 0 or n_left + n_right != size:
                continue  # one side has changed since this pair was queued
            length[left] = size
            length[right] = 0
            after = nxt[right]
            nxt[left] = after
            if after >= 0:
                prev[after] = left
            before = prev[left]
            if before >= 0:
                tid = vocab.get(text[before:left + size])
                if tid is not None:
                    push(heap, (-scores[tid], before, left, left + size - before))
            if after >= 0:
                tid = vocab.get(text[left:after + length[after]])
                if tid is not None:
                    push(heap, (-scores[tid], left, after, size + length[after]))
        i = 0
        while i >= 0:
            piece = text[i:i + length[i]]
            tid = vocab.get(piece)
            if tid is not None:
                out.append(tid)
            else:  # only single characters can be unknown: merges always make known pieces
                out.extend(self._byte_token(b) for b in piece.encode("utf-8"))
            i = nxt[i]

    def _byte_token(self, b: int) -> int:
        table = self._byte_ids
        if table is None:
            get = self._text_to_id.get
            table = self._byte_ids = [
                get(f"<0x{v:02X}>", get(chr(v)) if v < 0x80 else None) for v in range(256)]
        tid = table[b]
        if tid is None:
            raise TokenizerError(f"the text needs byte 0x{b:02X}, but the vocabulary has no "
                                 f"<0x{b:02X}> token to fall back on")
        return tid

    def _normal_piece(self, text: str) -> bytes:
        return text.replace(SPACE, " ").encode("utf-8", "surrogateescape")
