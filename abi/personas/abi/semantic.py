"""Abi's classifiers on meaning: a request's sentence embedding (``abi.embeddings.Encoder``,
all-MiniLM-L6-v2 unless configured), joined with the lexicon cue features and, per class,
the mean cosine similarity of its nearest training examples of that class, goes to a
multinomial logistic regression whose probabilities are calibrated by one temperature
fitted on out-of-fold predictions of the training data. Five-fold cross-validation chose
these (``tools/eval_routing.py --cross-validate``): the neighbour features raised the
out-of-fold violation recall at precision 0.90 from 0.90 to 0.94, the cue features are
worth 0.01 of it, and stronger (l2 0.03) or weaker (0.001) regularisation, or 10
neighbours, did worse.

Training runs at first use from the shipped data (``personas/data``). The embeddings of the
training texts are stored on disk next to the models (``<model dir>/personas/``), one file
per embedding model, keyed by the texts themselves, so a changed or added example is
embedded again and nothing can go stale; the fitted weights are cached under a hash of the
data, the model file and ``FORMAT``. No network is used here; the embedding model is
fetched like any other model (``python -m abi pull all-minilm-l6-v2``).

When the embedding model cannot be loaded, ``load_embedder`` logs a warning and returns
None, and Abi uses the lexical classifiers (n-grams and cues) instead.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from abi._kernels import qmatmul
from abi.gguf import GGMLType
from abi.personas.textmodel import lbfgs

log = logging.getLogger("abi.personas")

FORMAT = 2            # bump when features or training change, so cached weights are refit
NEIGHBOURS = 5        # nearest training examples per class that the neighbour features average
LEXICAL_MODEL = "lexical"   # MultiPersonaConfig.embedding_model value that turns embeddings off
_CACHE_ITEMS = 256    # recent texts whose embeddings are kept (policy and query share one)


def cache_dir() -> Path:
    from abi.models_hub import model_dir

    return model_dir() / "personas"


class Embedder:
    """``embed(text)`` and ``embed_many(texts)`` through one Encoder, with a small cache of
    recent texts (the policy and the query classifier embed the same message) and a disk
    store of training-text embeddings."""

    def __init__(self, encoder):
        self.encoder = encoder
        st = os.stat(encoder.path)
        self.identity = f"{Path(encoder.path).name}:{st.st_size}:{encoder.pooling}"
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, text: str) -> np.ndarray:
        with self._lock:
            v = self._recent.get(text)
            if v is not None:
                self._recent.move_to_end(text)
                return v
            v = self.encoder.encode(text)
            self._recent[text] = v
            if len(self._recent) > _CACHE_ITEMS:
                self._recent.popitem(last=False)
            return v

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32: stored vectors where the text was embedded before,
        the rest computed now and added to the store."""
        key = hashlib.sha256(self.identity.encode()).hexdigest()[:16]
        path = cache_dir() / f"embeddings-{key}.npz"
        stored: dict[str, np.ndarray] = {}
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    stored = dict(zip(z["texts"].tolist(), z["vectors"]))
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable embedding store %s", path)
        missing = sorted({t for t in texts if t not in stored})
        if missing:
            log.info("embedding %d training texts with %s", len(missing), self.identity)
            for t, v in zip(missing, self.encoder.encode_batch(missing)):
                stored[t] = v
            _save_npz(path, texts=np.array(list(stored)), vectors=np.stack(list(stored.values())))
        return np.stack([stored[t] for t in texts]).astype(np.float32)


def _save_npz(path: Path, **arrays) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache only costs the next process a retraining
        log.warning("could not write %s: %s", path, e)


_EMBEDDERS: dict[str, Embedder | None] = {}
_EMBEDDERS_LOCK = threading.Lock()


def load_embedder(model: str | None = None) -> Embedder | None:
    """The shared Embedder of ``model`` (None: the default embedding model), or None, with
    a logged warning, when it cannot be loaded (Abi then classifies lexically)."""
    from abi.errors import AbiError
    from abi.embeddings import Encoder

    key = model or ""
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            try:
                # routing reads the start of a message; long texts are cut, not refused
                enc = Encoder(model, truncate=True, max_tokens=128)
                _EMBEDDERS[key] = Embedder(enc)
            except (AbiError, OSError) as e:
                log.warning("the embedding model %s could not be loaded (%s: %s); routing and "
                            "moderation fall back to the lexical classifiers, which are less "
                            "accurate", model or "all-minilm-l6-v2", type(e).__name__, e)
                _EMBEDDERS[key] = None
        return _EMBEDDERS[key]


# --- calibrated logistic regression ----------------------------------------------------

def _fit(X: np.ndarray, y: np.ndarray, K: int, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced multinomial logistic regression, L-BFGS from zeros (deterministic)."""
    n, D = X.shape
    Y = np.zeros((n, K))
    Y[np.arange(n), y] = 1.0
    counts = np.bincount(y, minlength=K).astype(float)
    w = n / (K * counts[y])
    w /= w.sum()

    def loss_grad(theta):
        W, b = theta[:D * K].reshape(D, K), theta[D * K:]
        Z = X @ W + b
        Z -= Z.max(axis=1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        loss = -(w * (Y * logp).sum(axis=1)).sum() + 0.5 * l2 * (W * W).sum()
        G = (np.exp(logp) - Y) * w[:, None]
        return loss, np.concatenate([(X.T @ G + l2 * W).ravel(), G.sum(axis=0)])

    theta = lbfgs(loss_grad, np.zeros(D * K + K), max_iter=400)
    return theta[:D * K].reshape(D, K), theta[D * K:]


def _softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=-1, keepdims=True)
    P = np.exp(Z)
    return P / P.sum(axis=-1, keepdims=True)


def _temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of out-of-fold logits."""
    best_t, best = 1.0, math.inf
    for t in np.exp(np.linspace(math.log(0.25), math.log(8.0), 61)):
        P = _softmax(logits / t)
        nll = -np.log(P[np.arange(len(y)), y] + 1e-12).mean()
        if nll < best:
            best_t, best = float(t), nll
    return best_t


class CalibratedLinear:
    """Standardised features -> logistic regression -> softmax(logits / temperature)."""

    def __init__(self, classes, mean, scale, W, b, temperature):
        self.classes = list(classes)
        self.mean, self.scale = mean, scale
        self.W, self.b, self.temperature = W, b, float(temperature)

    @classmethod
    def train(cls, X: np.ndarray, labels: Sequence[str], l2: float = 3e-3,
              folds: int = 5) -> "CalibratedLinear":
        classes = sorted(set(labels))
        y = np.array([classes.index(lab) for lab in labels])
        mean = X.mean(axis=0)
        scale = X.std(axis=0) + 1e-6
        Xs = (X - mean) / scale
        K = len(classes)
        oof = np.zeros((len(y), K))
        order = np.random.default_rng(0).permutation(len(y))
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            W, b = _fit(Xs[train], y[train], K, l2)
            oof[test] = Xs[test] @ W + b
        W, b = _fit(Xs, y, K, l2)
        return cls(classes, mean, scale, W, b, _temperature(oof, y))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(X)
        return _softmax(((X - self.mean) / self.scale @ self.W + self.b) / self.temperature)

    def arrays(self) -> dict:
        return {"classes": np.array(self.classes), "mean": self.mean, "scale": self.scale,
                "W": self.W, "b": self.b, "temperature": np.array(self.temperature)}

    @classmethod
    def from_arrays(cls, z: Mapping) -> "CalibratedLinear":
        return cls(z["classes"].tolist(), z["mean"], z["scale"], z["W"], z["b"],
                   float(z["temperature"]))


def _unit(E: np.ndarray) -> np.ndarray:
    E = np.atleast_2d(E).astype(np.float32)
    return E / (np.linalg.norm(E, axis=1, keepdims=True) + 1e-12)


class Neighbours:
    """For each class, the mean cosine similarity of a text's ``k`` nearest training examples
    of that class: a local view of the embedding space that a linear model cannot form (a
    request next to a benign look-alike stays apart from the harmful examples whose words
    it shares)."""

    def __init__(self, vectors: np.ndarray, bounds: np.ndarray, k: int):
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.bounds, self.k = bounds, int(k)
        # per class: its rows [a, b) and how many of them the feature averages
        self._spans = [(int(a), int(b), min(self.k, int(b - a)))
                       for a, b in zip(bounds[:-1], bounds[1:])]

    @classmethod
    def build(cls, E: np.ndarray, y: np.ndarray, n_classes: int, k: int = NEIGHBOURS
              ) -> tuple["Neighbours", np.ndarray]:
        """The reference set of embeddings ``E`` with class indices ``y``, and where each row
        of ``E`` went in it (to leave an example out of its own neighbours)."""
        order = np.argsort(y, kind="stable")
        where = np.empty_like(order)
        where[order] = np.arange(len(order))
        bounds = np.searchsorted(y[order], np.arange(n_classes + 1))
        return cls(_unit(E[order]), bounds, k), where

    def features(self, E: np.ndarray, leave_out: np.ndarray | None = None) -> np.ndarray:
        U = _unit(E)
        if len(U) == 1:
            # one text (routing): our single-threaded gemv, ~0.1 ms (einsum takes twice that;
            # a BLAS gemv would start BLAS threads whose spinning slowed the encoder beside
            # them threefold on 2 cores)
            S = qmatmul(self.vectors, GGMLType.F32, self.vectors.shape, U[0], n_threads=1)[None]
        else:
            S = U @ self.vectors.T
        if leave_out is not None:
            S[np.arange(len(S)), leave_out] = -1.0
        out = np.empty((len(S), len(self.bounds) - 1), np.float32)
        for c, (a, b, k) in enumerate(self._spans):
            # the mean of the k largest (sum / k: the same bits as .mean, less overhead)
            out[:, c] = np.partition(S[:, a:b], b - a - k, axis=1)[:, b - a - k:].sum(axis=1) / k
        return out

    def arrays(self) -> dict:
        return {"nn_vectors": self.vectors, "nn_bounds": self.bounds, "nn_k": np.array(self.k)}

    @classmethod
    def from_arrays(cls, z: Mapping) -> "Neighbours":
        return cls(z["nn_vectors"], z["nn_bounds"], int(z["nn_k"]))


class SemanticClassifier:
    """``predict(text) -> {class: probability}`` from the embedding, ``lexical(text)`` (a
    function text -> {name: value in [0, 1]}, names fixed) and the neighbour similarities."""

    def __init__(self, embedder: Embedder, lexical: Callable[[str], Mapping[str, float]],
                 names: list[str], model: CalibratedLinear, neighbours: Neighbours):
        self.embedder, self.lexical, self.names, self.model = embedder, lexical, names, model
        self.neighbours = neighbours

    def features(self, texts: Sequence[str], E: np.ndarray,
                 leave_out: np.ndarray | None = None) -> np.ndarray:
        L = np.array([[lex.get(n, 0.0) for n in self.names] for lex in map(self.lexical, texts)],
                     np.float32)
        return np.hstack([E, L, self.neighbours.features(E, leave_out)])

    def predict(self, text: str) -> dict[str, float]:
        p = self.model.predict_proba(self.features([text], self.embedder.embed(text)[None]))[0]
        return {c: float(x) for c, x in zip(self.model.classes, p)}

    def predict_many(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """``predict`` of each text, embedded in one batch through the disk store (for
        evaluating on training data)."""
        P = self.model.predict_proba(self.features(texts, self.embedder.embed_many(texts)))
        return [{c: float(x) for c, x in zip(self.model.classes, p)} for p in P]

    @classmethod
    def train(cls, name: str, embedder: Embedder, examples: Sequence[tuple[str, str]],
              lexical: Callable[[str], Mapping[str, float]], l2: float = 3e-3,
              store: bool = True) -> "SemanticClassifier":
        """Fit on ``examples`` (text, label), or load the weights cached for exactly these
        examples, this embedding model and ``FORMAT`` (``store=False``: always fit, cache
        nothing, as cross-validation does). A training example's neighbour features leave
        the example itself out."""
        texts = [t for t, _ in examples]
        labels = [lab for _, lab in examples]
        names = sorted(lexical(texts[0]))
        h = hashlib.sha256(f"{FORMAT}|{name}|{embedder.identity}|{l2}|{names}".encode())
        for t, lab in examples:
            h.update(f"{lab}\x00{t}\x01".encode())
        path = cache_dir() / f"{name}-{h.hexdigest()[:20]}.npz"
        if store and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    return cls(embedder, lexical, names, CalibratedLinear.from_arrays(z),
                               Neighbours.from_arrays(z))
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable classifier cache %s", path)
        E = embedder.embed_many(texts)
        classes = sorted(set(labels))
        y = np.array([classes.index(lab) for lab in labels])
        neighbours, where = Neighbours.build(E, y, len(classes))
        this = cls(embedder, lexical, names, None, neighbours)
        this.model = CalibratedLinear.train(this.features(texts, E, where), labels, l2=l2)
        if store:
            _save_npz(path, **this.model.arrays(), **neighbours.arrays())
        return this
