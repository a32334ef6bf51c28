"""Aviva's document store: documents split into passages, searched by BM25, by embedding
similarity (abi's own ``Encoder``), or both fused by reciprocal rank.

retrieval="auto" uses both when the embedding model is already in the model cache and BM25
alone otherwise (it never starts a download); if the encoder fails at any point the store
keeps answering with BM25 and says why in ``embedding_error``. Passage embeddings are
computed on first search and kept.
"""
from __future__ import annotations

import math
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from abi.errors import ConfigError, InvalidRequestError
from abi.personas.abi.cues import stem

TEXT_SUFFIXES = (".md", ".txt", ".rst", ".markdown")
MAX_DOCUMENT_CHARS = 5_000_000
RRF_K = 60   # reciprocal rank fusion constant (the usual choice)
STOPWORDS = frozenset("""a an and are as at be been but by can could did do does doing for from
had has have how i if in into is it its just me my of on or our so than that the their them
then there these they this those to was we were what when where which who whom why will with
would you your yours about after again all also am any because before being below between
both during each few further here more most no nor not only other out over own same should
some such too under until up very""".split())


def terms(text: str) -> list[str]:
    """Search terms of ``text``: lowercase words and numbers, stopwords dropped, stemmed."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.lower())   # 8,848 -> 8848
    words = re.findall(r"[a-z0-9]+(?:[.'][a-z0-9]+)*", text)
    return [stem(w) for w in words if w not in STOPWORDS]


@dataclass(frozen=True)
class Passage:
    doc_id: str
    title: str
    source: str | None
    index: int          # position of the passage in its document
    text: str

    def citation(self) -> dict:
        return {"id": self.doc_id, "title": self.title, "source": self.source,
                "passage": self.index}


@dataclass
class SearchHit:
    passage: Passage
    score: float
    method: str        # bm25, embedding or hybrid


def chunk(text: str, max_words: int = 120) -> list[str]:
    """Passages of about ``max_words``: paragraphs (a heading starts a new one) joined
    while they fit; a paragraph too long on its own is cut at sentence ends."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n|\n(?=#+ )", text) if b.strip()]
    pieces: list[str] = []
    for b in blocks:
        if len(b.split()) <= max_words:
            pieces.append(b)
            continue
        cur: list[str] = []
        for sent in re.split(r"(?<=[.!?])\s+", b):
            if cur and len(" ".join(cur + [sent]).split()) > max_words:
                pieces.append(" ".join(cur))
                cur = []
            cur.append(sent)
        if cur:
            pieces.append(" ".join(cur))
    out: list[str] = []
    for p in pieces:
        if out and not p.startswith("#") and len((out[-1] + " " + p).split()) <= max_words:
            out[-1] = out[-1] + "\n\n" + p
        else:
            out.append(p)
    return out


class BM25Index:
    """Okapi BM25 over passages (k1=1.5, b=0.75)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.docs: list[Counter] = []
        self.lengths: list[int] = []
        self.df: Counter = Counter()
        self.postings: dict[str, list[int]] = {}

    def add(self, text: str) -> None:
        tf = Counter(terms(text))
        i = len(self.docs)
        self.docs.append(tf)
        self.lengths.append(sum(tf.values()))
        for t in tf:
            self.df[t] += 1
            self.postings.setdefault(t, []).append(i)

    def idf(self, term: str) -> float:
        n, df = len(self.docs), self.df.get(term, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> dict[int, float]:
        if not self.docs:
            return {}
        avg = sum(self.lengths) / len(self.lengths) or 1.0
        out: dict[int, float] = {}
        for t in set(terms(query)):
            idf = self.idf(t)
            for i in self.postings.get(t, ()):
                f = self.docs[i][t]
                norm = f + self.k1 * (1 - self.b + self.b * self.lengths[i] / avg)
                out[i] = out.get(i, 0.0) + idf * f * (self.k1 + 1) / norm
        return out


class KnowledgeStore:
    """Documents for Aviva. ``add_document``/``add_path`` fill it; ``search`` finds
    passages. ``encoder`` (anything with ``encode_batch(texts) -> array``) replaces the
    default embedding model."""

    def __init__(self, retrieval: str = "auto", embedding_model: str | None = None,
                 encoder: Any = None, chunk_words: int = 120, min_similarity: float = 0.25):
        if retrieval not in ("auto", "bm25", "embedding", "hybrid"):
            raise ConfigError(f"retrieval must be auto, bm25, embedding or hybrid, got "
                              f"{retrieval!r}", field="retrieval")
        self.retrieval = retrieval
        self.embedding_model = embedding_model
        self.chunk_words = chunk_words
        self.min_similarity = min_similarity
        self.passages: list[Passage] = []
        self.bm25 = BM25Index()
        self._encoder = encoder
        self._vectors: np.ndarray | None = None   # (n_embedded, dim), unit rows
        self.embedding_error: str | None = None
        self._lock = threading.Lock()
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self.passages)

    @property
    def documents(self) -> int:
        return len(self._ids)

    # --- filling --------------------------------------------------------------------------

    def add_document(self, text: str, title: str | None = None, source: str | None = None,
                     doc_id: str | None = None) -> str:
        """Add one document; returns its id."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError("a document needs non-empty text")
        if len(text) > MAX_DOCUMENT_CHARS:
            raise InvalidRequestError(f"a document may hold at most {MAX_DOCUMENT_CHARS} "
                                      f"characters, got {len(text)}")
        with self._lock:
            doc_id = doc_id or f"doc{len(self._ids) + 1}"
            if doc_id in self._ids:
                raise InvalidRequestError(f"a document with id {doc_id!r} exists")
            self._ids.add(doc_id)
            heading = re.match(r"\s*#+\s*(.+)", text)
            title = title or (heading.group(1).strip() if heading else doc_id)
            for i, piece in enumerate(chunk(text, self.chunk_words)):
                self.passages.append(Passage(doc_id, title, source, i, piece))
                self.bm25.add(f"{title}\n{piece}")
        return doc_id

    def add_path(self, path: str | os.PathLike) -> int:
        """Add a text file, or every .md/.txt/.rst file under a folder (sorted); returns
        how many documents were added."""
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in
                           TEXT_SUFFIXES)
        elif p.is_file():
            files = [p]
        else:
            raise ConfigError(f"knowledge path {str(p)!r} does not exist",
                              field="aviva.knowledge_paths")
        for f in files:
            try:
                text = f.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read knowledge file {f}: {exc}",
                                  field="aviva.knowledge_paths") from None
            if text.strip():
                self.add_document(text, source=str(f), doc_id=str(f.relative_to(p) if p.is_dir()
                                                                   else f.name))
        return len(files)

    # --- embeddings -----------------------------------------------------------------------

    def method(self) -> str:
        """The retrieval actually used now: bm25, embedding or hybrid."""
        if self.retrieval == "bm25" or self.embedding_error is not None:
            return "bm25"
        if self.retrieval == "auto":
            if self._encoder is None and not self._model_cached():
                return "bm25"
            return "hybrid"
        return self.retrieval

    def _model_cached(self) -> bool:
        from abi.errors import AbiError
        from abi.models_hub import resolve_model

        try:
            from abi.embeddings import DEFAULT_EMBEDDING_MODEL

            resolve_model(self.embedding_model or DEFAULT_EMBEDDING_MODEL, download=False)
            return True
        except (AbiError, ImportError):
            return False

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            from abi.embeddings import Encoder

            self._encoder = Encoder(self.embedding_model, truncate=True)
        v = np.asarray(self._encoder.encode_batch(texts), np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.where(norms > 0, norms, 1.0)

    def _embedding_scores(self, query: str) -> dict[int, float] | None:
        """Cosine similarity of the query to every passage; None when embeddings fail
        (the store then stays on BM25)."""
        try:
            with self._lock:
                done = 0 if self._vectors is None else len(self._vectors)
                if done < len(self.passages):
                    new = self._encode([f"{p.title}\n{p.text}" for p in self.passages[done:]])
                    self._vectors = new if self._vectors is None else np.vstack([self._vectors,
                                                                                  new])
                vectors = self._vectors
            q = self._encode([query])[0]
        except Exception as exc:  # a missing model or a broken file: fall back, and say why
            self.embedding_error = f"{type(exc).__name__}: {exc}"
            return None
        sims = vectors @ q
        return {i: float(s) for i, s in enumerate(sims)}

    # --- search ---------------------------------------------------------------------------

    def search(self, query: str, top_k: int = 3) -> list[SearchHit]:
        """The ``top_k`` best passages for ``query``, best first (none that share no
        term with it under BM25 alone, none under ``min_similarity`` by embeddings)."""
        if not isinstance(query, str) or not query.strip() or not self.passages:
            return []
        method = self.method()
        bm25 = self.bm25.scores(query)
        if method == "bm25":
            return self._top(bm25, top_k, "bm25")
        emb = self._embedding_scores(query)
        if emb is None:
            return self._top(bm25, top_k, "bm25")
        emb = {i: s for i, s in emb.items() if s >= self.min_similarity}
        if method == "embedding":
            return self._top(emb, top_k, "embedding")
        fused: dict[int, float] = {}
        for ranking in (bm25, emb):
            for rank, i in enumerate(sorted(ranking, key=lambda i: -ranking[i])):
                fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank + 1)
        return self._top(fused, top_k, "hybrid")

    def _top(self, scores: dict[int, float], k: int, method: str) -> list[SearchHit]:
        order = sorted(scores, key=lambda i: (-scores[i], i))[:k]
        return [SearchHit(self.passages[i], scores[i], method) for i in order if scores[i] > 0]
