"""Fine-tuning data: JSONL in the formats people have, tokenised with the model's own
tokenizer and chat template, and batched by length.

One object per line:

- ``{"messages": [{"role": ..., "content": ...}, ...]}``: a chat, rendered with the model's
  chat template; the loss is on the assistant messages' tokens only.
- ``{"prompt": ..., "completion": ...}``: a one-turn chat (user, assistant), loss on the
  completion.
- ``{"text": ...}``: plain text, loss on every token.

The assistant spans are found by rendering the chat up to each assistant message with the
generation prompt and through it without: the tokens between the two are that message's
(a template whose renders are not prefixes of each other is refused).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError
from ..llm.chat_template import ChatTemplate, ChatTemplateError

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Example:
    """``ids`` (n,) tokens; ``mask`` (n,) True where a token is a loss target (predicted
    from the tokens before it)."""

    ids: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """``[(line_number, record)]``, each checked to be one of the three formats."""
    out = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            _check_record(rec, f"{path}:{n}")
            out.append((n, rec))
    if not out:
        raise DatasetError(f"{path} holds no examples")
    return out


def _check_record(rec, where: str) -> None:
    if not isinstance(rec, dict):
        raise DatasetError(f"{where}: each line must be a JSON object")
    kinds = [k for k in ("messages", "prompt", "text") if k in rec]
    if len(kinds) != 1:
        raise DatasetError(f"{where}: give exactly one of 'messages', 'prompt'+'completion' "
                           f"or 'text' (found keys {sorted(rec)})")
    if kinds[0] == "text":
        if not isinstance(rec["text"], str) or not rec["text"]:
            raise DatasetError(f"{where}: 'text' must be a non-empty string")
    elif kinds[0] == "prompt":
        if not all(isinstance(rec.get(k), str) for k in ("prompt", "completion")) or not rec["completion"]:
            raise DatasetError(f"{where}: 'prompt' and 'completion' must be strings, the "
                               "completion non-empty")
    else:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DatasetError(f"{where}: 'messages' must be a non-empty list")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DatasetError(f"{where}: messages[{i}] needs a role ({', '.join(ROLES)}) "
                                   "and a string content")
        if not any(m["role"] == "assistant" for m in msgs):
            raise DatasetError(f"{where}: a chat needs at least one assistant message to learn from")


class Encoder:
    """Records -> Examples with a model's tokenizer and chat template."""

    def __init__(self, gguf_file):
        from ..llm.tokenizer import load_tokenizer

        self.tok = tok = load_tokenizer(gguf_file)
        text = lambda i: tok.tokens[i] if i is not None and 0 <= i < tok.n_vocab else ""  # noqa: E731
        source = gguf_file.get("tokenizer.chat_template")
        self.template = ChatTemplate(source if isinstance(source, str) else None,
                                     text(tok.bos_id), text(tok.eos_id))

    def chat_ids(self, messages, add_generation_prompt: bool) -> list[int]:
        text = self.template.render(messages, add_generation_prompt=add_generation_prompt)
        bos = self.template.bos_token
        add_bos = False if bos and text.startswith(bos) else None
        return self.tok.encode(text, add_bos=add_bos, special=True)

    def encode(self, rec: dict, where: str) -> Example:
        if "text" in rec:
            ids = self.tok.encode(rec["text"], special=False)
            if self.tok.eos_id is not None:
                ids = ids + [self.tok.eos_id]
            mask = np.ones(len(ids), bool)
            mask[0] = False     # the first token has nothing before it
            return Example(np.asarray(ids, np.int32), mask)
        msgs = rec["messages"] if "messages" in rec else [
            {"role": "user", "content": rec["prompt"]}, {"role": "assistant", "content": rec["completion"]}]
        try:
            full = self.chat_ids(msgs, False)
            mask = np.zeros(len(full), bool)
            for i, m in enumerate(msgs):
                if m["role"] != "assistant":
                    continue
                before = self.chat_ids(msgs[:i], True) if i else []
                through = self.chat_ids(msgs[:i + 1], False)
                if full[:len(through)] != through or through[:len(before)] != before:
                    raise DatasetError(f"{where}: the chat template does not render this chat as a "
                                       "growing prefix; cannot find the assistant's tokens")
                mask[len(before):len(through)] = True
        except ChatTemplateError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        return Example(np.asarray(full, np.int32), mask)


def load_examples(path, gguf_file, max_seq_len: int) -> tuple[list[Example], int]:
    """The file's examples, each cut to ``max_seq_len + 1`` tokens (inputs and the targets
    shifted by one); returns (examples, how many were cut). An example left without a target
    token is a DatasetError naming its line."""
    enc = Encoder(gguf_file)
    out, cut = [], 0
    n_vocab = len(gguf_file.get("tokenizer.ggml.tokens") or [])
    for n, rec in read_jsonl(path):
        ex = enc.encode(rec, f"{path}:{n}")
        if len(ex) > max_seq_len + 1:
            ex, cut = Example(ex.ids[:max_seq_len + 1], ex.mask[:max_seq_len + 1]), cut + 1
        if not ex.mask[1:].any():
            raise DatasetError(f"{path}:{n}: no loss tokens within max_seq_len {max_seq_len}")
        if n_vocab and int(ex.ids.max()) >= n_vocab:
            raise DatasetError(f"{path}:{n}: token id beyond the vocabulary")
        out.append(ex)
    return out, cut


def split(examples: list[Example], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) indices: ``fraction`` of the examples held out (at least one
    when fraction > 0, and at least one left to train on)."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"val_split must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = 0 if fraction == 0 else max(1, int(round(fraction * len(examples))))
    if n_val >= len(examples):
        raise DatasetError(f"{len(examples)} examples are too few to hold out {fraction:.0%}")
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def pad_batch(examples: list[Example]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, mask), each (B, T) with T the longest example less one; padding
    sits after each example's end (causal attention never sees it) with mask False."""
    T = max(len(e) for e in examples) - 1
    ids = np.zeros((len(examples), T + 1), np.int64)
    mask = np.zeros((len(examples), T + 1), bool)
    for b, e in enumerate(examples):
        ids[b, :len(e)], mask[b, :len(e)] = e.ids, e.mask
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]


class LengthBatcher:
    """Batches of similar length: each epoch shuffles the examples, sorts runs of
    ``50 x batch_size`` of them by length, cuts those into batches and shuffles the
    batches. Its state (a JSON-able dict) lets a resumed run draw the same batches."""

    def __init__(self, indices: list[int], lengths: list[int], batch_size: int):
        self.indices, self.lengths, self.batch_size = list(indices), lengths, batch_size
        self.batches: list[list[int]] = []
        self.pos = 0

    def _epoch(self, rng: np.random.Generator) -> None:
        order = [self.indices[i] for i in rng.permutation(len(self.indices))]
        run = 50 * self.batch_size
        batches = []
        for r0 in range(0, len(order), run):
            chunk = sorted(order[r0:r0 + run], key=lambda i: self.lengths[i])
            batches += [chunk[b:b + self.batch_size] for b in range(0, len(chunk), self.batch_size)]
        self.batches = [batches[i] for i in rng.permutation(len(batches))]
        self.pos = 0

    def next(self, rng: np.random.Generator) -> list[int]:
        if self.pos >= len(self.batches):
            self._epoch(rng)
        self.pos += 1
        return self.batches[self.pos - 1]

    def state(self) -> dict:
        return {"batches": self.batches, "pos": self.pos}

    def load_state(self, state: dict) -> None:
        self.batches, self.pos = [list(map(int, b)) for b in state["batches"]], int(state["pos"])
