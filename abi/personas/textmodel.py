"""A small text classifier: sparse n-gram features and multinomial logistic regression,
trained in numpy (L-BFGS, from zeros, so training is deterministic).

Features of a text: word unigrams and bigrams, character 3-5-grams inside words (so
"frustrating" and "frustrated" share evidence), a few shape features (code punctuation,
first word, question mark), and optional named numeric features supplied by the caller.
N-gram features are binary, scaled to unit length together; extra features keep their
values.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

_TOKEN = re.compile(r"[a-z0-9_]+(?:'[a-z]+)?|[^\sa-z0-9_]")
_CODE_CHARS = set("{}[]()<>=;:`#$@|&*/\\+-_.")
_CODE_WORDS = {"def", "fn", "func", "function", "class", "return", "import", "const", "var",
               "let", "struct", "void", "int", "printf", "println", "console", "null", "nil",
               "async", "await", "lambda", "self", "this", "std", "usize", "pub", "impl",
               "elif", "else", "while", "for", "include", "namespace", "sql", "select",
               "regex", "json", "api", "bash", "git", "python", "javascript", "typescript",
               "rust", "zig", "java", "golang", "c++", "compile", "compiler", "segfault",
               "stack", "traceback", "exception", "error", "bug", "debug", "function's"}


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"(.)\1{2,}", r"\1\1", text)  # "soooo" -> "soo": one feature for all


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(normalize(text))


def text_features(text: str) -> list[str]:
    """The sparse feature names of ``text`` (duplicates removed by the caller)."""
    toks = tokenize(text)
    words = [t for t in toks if t[0].isalnum() or t[0] == "_"]
    feats = [f"w:{t}" for t in toks]
    feats += [f"b:{a} {b}" for a, b in zip(words, words[1:])]
    for w in words:
        if w.isalpha() and len(w) > 2:
            padded = f"<{w}>"
            for n in (3, 4, 5):
                feats += [f"c:{padded[i:i + n]}" for i in range(len(padded) - n + 1)]
    if words:
        feats.append(f"first:{words[0]}")
        if len(words) > 1:
            feats.append(f"first2:{words[0]} {words[1]}")
    raw = text.strip()
    n_code = sum(ch in _CODE_CHARS for ch in raw)
    feats.append(f"codechars:{min(4, int(math.log2(1 + n_code)))}")
    if "`" in raw:
        feats.append("shape:backtick")
    if "\n" in raw:
        feats.append("shape:multiline")
    if re.search(r"\w\(|\)\s*[{:;]|=>|->|::|==|!=|\w\.\w+\(", raw):
        feats.append("shape:code_syntax")
    if re.search(r"\b[a-z]+_[a-z_]+\b|\b[a-z]+[A-Z][a-zA-Z]+\b", raw):
        feats.append("shape:identifier")
    if any(w in _CODE_WORDS for w in words):
        feats.append("shape:code_word")
    if raw.endswith("?"):
        feats.append("shape:question")
    if "!" in raw:
        feats.append("shape:exclaim")
    feats.append(f"len:{min(5, int(math.log2(1 + len(words))))}")
    return feats


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum, not BLAS: single-threaded (no thread wake-ups per call on a busy machine)
    # and summed in a fixed order, so training gives the same weights every run
    return float(np.einsum("i,i->", a, b))


def lbfgs(fun, x0: np.ndarray, *, max_iter: int = 300, memory: int = 10,
          tol: float = 1e-6) -> np.ndarray:
    """Minimise a smooth function by limited-memory BFGS (two-loop recursion) with a
    backtracking Armijo line search. ``fun(x) -> (value, gradient)``."""
    x = x0.astype(np.float64).copy()
    f, g = fun(x)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        if np.abs(g).max() < tol:
            break
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(s_hist), reversed(y_hist)):
            a = _dot(s, q) / _dot(y, s)
            alphas.append(a)
            q -= a * y
        if s_hist:
            q *= _dot(s_hist[-1], y_hist[-1]) / _dot(y_hist[-1], y_hist[-1])
        else:
            q /= max(1.0, math.sqrt(_dot(q, q)))
        for (s, y), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += (a - _dot(y, q) / _dot(y, s)) * s
        d = -q
        slope = _dot(g, d)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear(), y_hist.clear()
            d, slope = -g, -_dot(g, g)
        step = 1.0
        while True:
            x_new = x + step * d
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = x_new - x, g_new - g
        if _dot(s, y) > 1e-12:
            s_hist.append(s), y_hist.append(y)
            if len(s_hist) > memory:
                s_hist.pop(0), y_hist.pop(0)
        converged = abs(f - f_new) <= tol * max(1.0, abs(f))
        x, f, g = x_new, f_new, g_new
        if converged:
            break
    return x


@dataclass
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]


class TextClassifier:
    """Multinomial logistic regression over ``text_features`` (plus ``extra`` features:
    a function text -> {name: value} of numeric features, e.g. lexicon scores)."""

    def __init__(self, classes: Sequence[str], vocabulary: Mapping[str, int], weights: np.ndarray,
                 bias: np.ndarray, extra: Callable[[str], Mapping[str, float]] | None = None):
        self.classes = list(classes)
        self.vocabulary = dict(vocabulary)
        self.weights = np.asarray(weights, np.float64)   # (V, K)
        self.bias = np.asarray(bias, np.float64)          # (K,)
        self.extra = extra

    # --- features -------------------------------------------------------------------------

    def _row(self, text: str, vocab: Mapping[str, int], grow: dict | None = None):
        # n-grams: binary, scaled to unit length together; extra features: appended as
        # given (already in [0, 1]), so their weight does not shrink with text length
        ngrams = dict.fromkeys(text_features(text), 1.0)
        scale = 1.0 / math.sqrt(len(ngrams)) if ngrams else 1.0
        names = {name: scale for name in ngrams}
        if self.extra is not None:
            for name, value in self.extra(text).items():
                if value:
                    names[f"x:{name}"] = float(value)
        cols, vals = [], []
        for name, value in names.items():
            j = vocab.get(name)
            if j is None and grow is not None:
                j = grow[name] = len(grow)
            if j is not None:
                cols.append(j)
                vals.append(value)
        return cols, np.asarray(vals, np.float64)

    def _matrix(self, texts: Iterable[str], grow: dict | None = None):
        from scipy import sparse

        indptr, indices, data = [0], [], []
        vocab = grow if grow is not None else self.vocabulary
        for text in texts:
            cols, vals = self._row(text, vocab, grow)
            indices.extend(cols)
            data.extend(vals.tolist())
            indptr.append(len(indices))
        return sparse.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, len(vocab)))

    # --- training and prediction ----------------------------------------------------------

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str], *, l2: float = 1e-3,
              max_iter: int = 300, balance: bool = True,
              extra: Callable[[str], Mapping[str, float]] | None = None) -> "TextClassifier":
        """Fit on ``texts`` and their ``labels``: mean cross-entropy (class-balanced) plus
        ``l2/2 * |W|^2``, minimised by L-BFGS from zeros."""
        if len(texts) != len(labels) or not texts:
            raise ValueError("texts and labels must be non-empty and of equal length")
        classes = sorted(set(labels))
        model = cls(classes, {}, np.zeros((0, len(classes))), np.zeros(len(classes)), extra)
        vocab: dict[str, int] = {}
        X = model._matrix(texts, grow=vocab)
        X = X.tocsr()
        X.resize((X.shape[0], len(vocab)))
        y = np.array([classes.index(lab) for lab in labels])
        n, V, K = X.shape[0], X.shape[1], len(classes)
        Y = np.zeros((n, K))
        Y[np.arange(n), y] = 1.0
        counts = np.bincount(y, minlength=K)
        sample_w = (n / (K * counts[y])) if balance else np.ones(n)
        sample_w = sample_w / sample_w.sum()
        Xt = X.T.tocsr()

        def loss_grad(theta):
            W = theta[:V * K].reshape(V, K)
            b = theta[V * K:]
            Z = X @ W + b
            Z -= Z.max(axis=1, keepdims=True)
            logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
            loss = -(sample_w * (Y * logp).sum(axis=1)).sum() + 0.5 * l2 * (W * W).sum()
            G = (np.exp(logp) - Y) * sample_w[:, None]
            gW = Xt @ G + l2 * W
            return loss, np.concatenate([gW.ravel(), G.sum(axis=0)])

        theta = lbfgs(loss_grad, np.zeros(V * K + K), max_iter=max_iter)
        model.vocabulary = vocab
        model.weights = theta[:V * K].reshape(V, K)
        model.bias = theta[V * K:]
        return model

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), n_classes) probabilities, columns in ``self.classes`` order."""
        Z = self._matrix(texts) @ self.weights + self.bias
        Z = np.asarray(Z) - np.max(Z, axis=1, keepdims=True)
        P = np.exp(Z)
        return P / P.sum(axis=1, keepdims=True)

    def predict(self, text: str) -> Prediction:
        p = self.predict_proba([text])[0]
        k = int(np.argmax(p))
        return Prediction(self.classes[k], float(p[k]),
                          {c: float(v) for c, v in zip(self.classes, p)})

    def top_features(self, label: str, n: int = 15) -> list[tuple[str, float]]:
        """The features that most favour ``label`` (for inspecting what was learned)."""
        k = self.classes.index(label)
        names = sorted(self.vocabulary, key=self.vocabulary.get)
        order = np.argsort(-self.weights[:, k])[:n]
        return [(names[j], float(self.weights[j, k])) for j in order]
