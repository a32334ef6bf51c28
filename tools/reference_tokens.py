"""Token-id fixtures from llama.cpp, for abi's tokenizer tests (tests/test_tokenizer*.py).

    python tools/reference_tokens.py [--out tests/fixtures] [--llama-python PYTHON]
                                     [--default-model PATH] [--gemma PATH] [--rebuild-vocab]
    python tools/reference_tokens.py --check FILE.gguf ...   (live comparison, writes nothing)

Writes into ``--out``:
  tok_bpe_small.gguf, tok_spm_small.gguf   small tokenizer-only GGUFs (no tensors) of our own:
                                           a byte-level BPE trained here and an SPM vocabulary
                                           with scores, byte tokens and control/user tokens;
                                           kept as they are unless --rebuild-vocab
  tokens_bpe_small.json                    llama.cpp's ids for the BPE file under each
                                           pre-tokenizer abi supports (names that llama.cpp
                                           treats alike share one result)
  tokens_spm_small.json                    ... for the SPM file under several flag settings
  tokens_smollm2-135m-instruct.json        ... for the default model (when it is present)
  tokens_gemma3-270m.json                  ... for a real gemma3 GGUF (only with --gemma)

llama.cpp runs in another interpreter (``--llama-python``, one with llama-cpp-python): this
same file is run there with ``--oracle REQUEST OUT``, importing nothing but llama_cpp.
``make_token_fixtures()`` is the entry point for tools/make_reference.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile

DEFAULT_LLAMA_PYTHON = os.environ.get("ABI_LLAMACPP_PYTHON", "python")  # see tools/make_reference.py

_PROSE = [
    "The quick brown fox jumps over the lazy dog. Tokenizers split text into pieces that a "
    "model has learned; the same text must always give the same ids, or the model reads "
    "something it was never trained on. That is why every id here is checked against llama.cpp.",
    "A small language model runs on a laptop: it reads a prompt, builds a cache of keys and "
    "values, and then writes one token at a time. Each step costs a matrix-vector product per "
    "layer, so memory bandwidth, not arithmetic, sets the speed.",
    "Numbers are tricky: 3.14159, 2.71828, 1e-9, 6.022e23, 1234567, 0.5%, $19.99, -273.15 °C "
    "and 1,000,000 all split differently depending on the pre-tokenizer's digit rules.",
    "Multilingual text: Москва — столица России. 東京は日本の首都です。北京是中国的首都。"
    "서울은 한국의 수도입니다. القاهرة عاصمة مصر. Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
]
_CODE = (
    "import os\n\n\nclass Cache:\n    \"\"\"A tiny LRU cache.\"\"\"\n\n    def __init__(self, size=128):\n"
    "        self.size = size\n        self.data = {}\n\n    def get(self, key, default=None):\n"
    "\t\tif key in self.data:\n\t\t\treturn self.data[key]\n        return default  # miss\n\n"
    "if __name__ == \"__main__\":\n    print(Cache(4).get('x', 42))\n"
)

TEXTS = [
    "",
    " ",
    "Hello world",
    " Hello world ",
    "   three leading spaces and a trailing tab\t",
    "def fib(n):\n    if n < 2:\n        return n\n\treturn fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i] * 2; }  // C++ && || != <= >=",
    "numbers: 1234567 3.14159 1e-9 -42 0x1F 1,000,000 2024-05-17 ٣٤٥ ½ ①②",
    "emoji 👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 thumbs, ❤️ heart, 🇯🇵 and 🤖🤖",
    "日本語のテキストと漢字。中文句子，还有标点！한국어 문장도 있습니다.",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم، هذا نص عربي.",
    "café naïve résumé ñandú Ångström Straße",
    "combining: e\u0301 a\u0300 n\u0303 o\u0308 (decomposed)",
    "Ελληνικά και हिन्दी पाठ",
    "runs:  two   three    four\t\ttabs\n\nblank lines\n\n\n\r\nwindows\r\n  \n",
    "\n\n\n",
    "\t\t\t",
    "trailing spaces   ",
    "it's I'm they're we've I'll he'd DON'T She'S",
    "punctuation , spacing . checks ? and ! ' quotes ' o'clock ' s",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|im_start|><|im_end|>",
    "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn> \t spaced <end_of_turn>  \n x</s>  y<unk>  z <bos>\t\tw",
    "<s>[INST] Hi [/INST]</s>",
    "<|begin_of_text|><|eot_id|> <tool_call>{\"name\": \"f\"}</tool_call>",
    "<unk> <pad> <mask> <0x41> <b>bold</b> <reponame>",
    "URLs https://example.com/path?q=1&r=two#frag and emails a.b@c.org",
    "mixed 中文English123日本語456 abc",
    "\u00a0non-breaking\u2009thin\u3000ideographic\u200bzero-width\u2028line",
    "a\u00a0\u00a0b \u3000\u3000c ,\u2009! \x0b\x0c d\u00a0\n\u2003e\u0085f\u1680\u1680(g) \u205f\u205f",
    "space runs then unicode spaces:  \u00a0x   \u3000y  \u2003\u2003z    \u202f!  \x0cw  \x85v",
    "digits: １２３ ²³ ⅻ 12345678901 x1y22z333",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝟙𝟚𝟛 and ǅ titlecase",
    "control\x01chars\x1f and \x7f delete",
    "qwertyuiop qwertyuiop",
]


def long_text() -> str:
    """About 2,000 tokens for the default model, built from the pieces above."""
    parts = []
    for i in range(2):
        parts.extend(_PROSE)
        parts.append(_CODE)
        parts.extend(t for t in TEXTS[2:20] if t.strip())
    return "\n\n".join(parts)


def all_texts() -> list[str]:
    return TEXTS + [long_text()]


# ----------------------------------------------------------------------------------------
# small vocabularies (need abi and `tokenizers`)

_BPE_SPECIALS = [  # (text, GGUF token type)
    ("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<|begin_of_text|>", 3),
    ("<|eot_id|>", 1),     # typed normal: llama.cpp makes it control (an end-of-generation text)
    ("<reponame>", 1),     # typed normal: found as the FIM repo token, made control and EOG
    ("<tool_call>", 4), ("</tool_call>", 4),  # user-defined: parsed even without special
    ("<unk>", 2),
]
_SPM_SPECIALS = [
    ("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2), ("<mask>", 3),
    ("<start_of_turn>", 3), ("<end_of_turn>", 3), ("<unused0>", 3), ("<s>", 3), ("<|endoftext|>", 3),
    ("\n", 4), ("\n\n", 4), ("   ", 4), ("\t", 4), ("\t\t", 4), ("<b>", 4), ("</b>", 4),
    ("</s>", 4),           # user-defined, but an EOG text: llama.cpp makes it control
]


def _corpus(with_emoji: bool) -> list[str]:
    lines = _PROSE + [_CODE] + [t for t in TEXTS if t]
    if not with_emoji:  # leave the SPM vocabulary without them: they must fall back to bytes
        lines = ["".join(c for c in t if ord(c) < 0x1F000 and c not in "♥❤️") for t in lines]
        lines = [t for t in lines if "हिन्दी" not in t]
    return lines * 3


def _train_bpe(corpus, vocab_size, pre_tokenizer, alphabet=()):
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=list(alphabet))
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return [t for t, _ in vocab], merges


def build_bpe_small(path: str) -> None:
    """A byte-level BPE of ~2,000 tokens trained on the texts above, with special tokens of
    every type and a merge-less word ('qwertyuiop') for the ignore_merges pre-tokenizers."""
    from tokenizers import pre_tokenizers

    from abi.gguf import GGUFWriter, GGUFValueType

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    pieces, merges = _train_bpe(_corpus(True), 2000, byte_level, pre_tokenizers.ByteLevel.alphabet())
    extra = ["qwertyuiop", "Ġqwertyuiop"]
    tokens = [t for t, _ in _BPE_SPECIALS] + [p for p in pieces if p not in extra] + extra
    types = [ty for _, ty in _BPE_SPECIALS] + [1] * (len(tokens) - len(_BPE_SPECIALS))
    w = GGUFWriter(path)
    _common_metadata(w, "abi-test-bpe")
    w.add_metadata("tokenizer.ggml.model", "gpt2")
    w.add_metadata("tokenizer.ggml.pre", "smollm")
    w.add_metadata("tokenizer.ggml.tokens", tokens, GGUFValueType.STRING)
    w.add_metadata("tokenizer.ggml.token_type", types, GGUFValueType.INT32)
    w.add_metadata("tokenizer.ggml.merges", merges, GGUFValueType.STRING)
    w.add_metadata("tokenizer.ggml.bos_token_id", 3, GGUFValueType.UINT32)
    w.add_metadata("tokenizer.ggml.eos_token_id", 0, GGUFValueType.UINT32)
    w.write()  # add_bos_token is left out on purpose: each pre-tokenizer's default applies


def build_spm_small(path: str) -> None:
    """An SPM vocabulary: special and user-defined tokens, <0x00>..<0xFF>, and ~2,500 pieces
    from a BPE trained on ▁-joined words, scored -(merge rank // 3) so that groups of three
    pieces tie and the leftmost-first rule is exercised."""
    from tokenizers import pre_tokenizers

    from abi.gguf import GGUFWriter, GGUFValueType

    meta = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    pieces, merges = _train_bpe(_corpus(False), 2600, meta)
    merged = {m.replace(" ", "", 1) for m in merges}
    rank = {m.replace(" ", "", 1): i for i, m in enumerate(merges)}
    runs = ["\u2581" * k for k in (2, 4, 8)] + ["\n\u2581", "\u2581\u2581\u2581\u2581\u2581\u2581"]
    tokens = [t for t, _ in _SPM_SPECIALS] + [f"<0x{b:02X}>" for b in range(256)]
    types = [ty for _, ty in _SPM_SPECIALS] + [6] * 256
    scores = [0.0] * len(tokens)
    for p in pieces + runs:
        if p in tokens:
            continue
        tokens.append(p)
        types.append(1)
        if p in runs:
            scores.append(-1.5)
        elif p in merged:
            scores.append(-float(rank[p] // 3))
        else:  # single characters: never the result of a merge, their score is unused
            scores.append(-10000.0)
    w = GGUFWriter(path)
    _common_metadata(w, "abi-test-spm")
    w.add_metadata("tokenizer.ggml.model", "llama")
    w.add_metadata("tokenizer.ggml.pre", "default")
    w.add_metadata("tokenizer.ggml.tokens", tokens, GGUFValueType.STRING)
    w.add_metadata("tokenizer.ggml.scores", scores, GGUFValueType.FLOAT32)
    w.add_metadata("tokenizer.ggml.token_type", types, GGUFValueType.INT32)
    w.add_metadata("tokenizer.ggml.bos_token_id", 2, GGUFValueType.UINT32)
    w.add_metadata("tokenizer.ggml.eos_token_id", 1, GGUFValueType.UINT32)
    w.add_metadata("tokenizer.ggml.unknown_token_id", 3, GGUFValueType.UINT32)
    w.add_metadata("tokenizer.ggml.padding_token_id", 0, GGUFValueType.UINT32)
    w.write()  # add_bos / add_space_prefix are set per variant


def _common_metadata(w, name: str) -> None:
    from abi.gguf import GGUFValueType

    # llama.cpp wants an architecture and its hyper-parameters even for vocab_only loads
    w.add_metadata("general.architecture", "llama")
    w.add_metadata("general.name", name)
    for key, value in (("context_length", 256), ("embedding_length", 64), ("block_count", 1),
                       ("feed_forward_length", 128), ("attention.head_count", 4)):
        w.add_metadata(f"llama.{key}", value, GGUFValueType.UINT32)
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", 1e-5, GGUFValueType.FLOAT32)


def rewrite_gguf(src: str, dst: str, changes: dict) -> None:
    """Copy ``src``'s metadata to ``dst`` with ``changes`` (key -> value, or None to drop)."""
    from abi.gguf import GGUFValueType, GGUFWriter, load

    f = load(src)
    w = GGUFWriter(dst)
    for key, value in f.metadata.items():
        if key in changes:
            continue
        w.add_metadata(key, value, f.metadata_types[key])
    for key, value in changes.items():
        if value is not None:
            w.add_metadata(key, value, GGUFValueType.BOOL if isinstance(value, bool) else None)
    w.write()


# ----------------------------------------------------------------------------------------
# oracle (runs under the llama-cpp-python interpreter)

def _oracle_main(request_path: str, out_path: str) -> None:
    import ctypes

    import llama_cpp

    req = json.load(open(request_path, encoding="utf-8"))
    llm = llama_cpp.Llama(req["model"], vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    def tokenize(text: bytes, add_special: bool, special: bool) -> list[int]:
        cap = len(text) + 16
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, text, len(text), buf, cap, add_special, special)
        assert n >= 0, n
        return list(buf[:n])

    def detokenize(ids: list[int], unparse: bool) -> bytes:
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        size = 64 + 32 * len(ids)
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, unparse)
        if n < 0:
            size = -n
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, unparse)
        return buf.raw[:n]

    def piece(tid: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(vocab, tid, buf, 256, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(vocab, tid, buf, -n, 0, special)
        return buf.raw[:n]

    cases = []
    for text in req["texts"]:
        raw = text.encode("utf-8")
        ids = {f"{'bos_' if a else ''}{'special' if s else 'plain'}": tokenize(raw, a, s)
               for a in (False, True) for s in (False, True)}
        detok = {f"{name}/{'special' if u else 'plain'}": detokenize(ids[name], u).hex()
                 for name in ("plain", "bos_special") for u in (False, True)}
        cases.append({"ids": ids, "detok": detok})

    def none_if_null(t):
        return None if t < 0 else int(t)

    info = {
        "n_vocab": n_vocab,
        "bos": none_if_null(llama_cpp.llama_vocab_bos(vocab)),
        "eos": none_if_null(llama_cpp.llama_vocab_eos(vocab)),
        "eot": none_if_null(llama_cpp.llama_vocab_eot(vocab)),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(vocab)),
        "eog": [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)],
    }
    for special in (False, True):
        pieces = [piece(i, special) for i in range(n_vocab)]
        info[f"pieces_sha256/{'special' if special else 'plain'}"] = pieces_digest(pieces)
    json.dump({"info": info, "cases": cases}, open(out_path, "w", encoding="utf-8"))


def pieces_digest(pieces) -> str:
    """sha256 over the pieces, each preceded by its length (so boundaries count)."""
    h = hashlib.sha256()
    for p in pieces:
        h.update(len(p).to_bytes(4, "little") + p)
    return h.hexdigest()


def ids_digest(ids) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def run_oracle(model: str, texts: list[str], llama_python: str = DEFAULT_LLAMA_PYTHON) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        req, out = os.path.join(tmp, "req.json"), os.path.join(tmp, "out.json")
        json.dump({"model": os.path.abspath(model), "texts": texts},
                  open(req, "w", encoding="utf-8"))
        proc = subprocess.run([llama_python, os.path.abspath(__file__), "--oracle", req, out],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"llama.cpp oracle failed on {model}:\n{proc.stderr[-3000:]}")
        return json.load(open(out, encoding="utf-8"))


def pack_bytes(data: bytes, full: bool = True):
    """Bytes in a fixture: text when valid UTF-8, else hex; or a digest when not ``full``."""
    if not full:
        return {"n": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": data.hex()}


def pack_ids(ids: list[int], full: bool = True):
    return ids if full else {"n": len(ids), "sha256": ids_digest(ids)}


def _pack(result: dict, full_long_ids: bool) -> dict:
    """The oracle's answer in fixture form. The last case is the long text: its detokenised
    bytes are kept as digests, and its ids too (but for ``plain``) unless ``full_long_ids``."""
    cases = result["cases"]
    for k, case in enumerate(cases):
        long = k == len(cases) - 1
        case["ids"] = {name: pack_ids(ids, not long or full_long_ids or name == "plain")
                       for name, ids in case["ids"].items()}
        case["detok"] = {name: pack_bytes(bytes.fromhex(h), not long) for name, h in case["detok"].items()}
    return result


# ----------------------------------------------------------------------------------------
# fixtures

SPM_VARIANTS = {  # name -> metadata changes on tok_spm_small.gguf
    "gemma_like": {"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_space_prefix": False},
    "llama_like": {"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_space_prefix": True,
                   "tokenizer.ggml.add_eos_token": True},
    "defaults": {},
    # llama.cpp gives a file named like Phi-3 right-stripping special tokens
    "phi3_named": {"general.name": "Phi3 test", "tokenizer.ggml.add_bos_token": False},
}


def _same(a: dict, b: dict) -> bool:
    return a["cases"] == b["cases"] and a["info"] == b["info"]


def _dump(path: str, data: dict) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
        fh.write("\n")
    return path


def make_token_fixtures(out_dir: str = "tests/fixtures", llama_python: str = DEFAULT_LLAMA_PYTHON,
                        default_model: str | None = None, gemma: str | None = None,
                        rebuild_vocab: bool = False) -> list[str]:
    """Write the tokenizer fixtures (see the module docstring); returns the paths written."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from abi.llm.tokenizer_bpe import PRE_TOKENIZERS

    os.makedirs(out_dir, exist_ok=True)
    texts = all_texts()
    written = []
    bpe_path, spm_path = os.path.join(out_dir, "tok_bpe_small.gguf"), os.path.join(out_dir, "tok_spm_small.gguf")
    if rebuild_vocab or not os.path.exists(bpe_path):
        build_bpe_small(bpe_path)
        written.append(bpe_path)
    if rebuild_vocab or not os.path.exists(spm_path):
        build_spm_small(spm_path)
        written.append(spm_path)

    with tempfile.TemporaryDirectory() as tmp:
        # names that llama.cpp treats alike share one stored result
        results, names = {}, {}
        preferred = ("default", "gpt-2", "smollm", "llama3", "qwen2", "starcoder", "dbrx", "stablelm2")
        for pre in sorted(PRE_TOKENIZERS, key=lambda name: (name not in preferred, name)):
            p = os.path.join(tmp, f"bpe_{pre}.gguf")
            rewrite_gguf(bpe_path, p, {"tokenizer.ggml.pre": pre})
            result = _pack(run_oracle(p, texts, llama_python), False)
            key = next((k for k, r in results.items() if _same(r, result)), pre)
            results.setdefault(key, result)
            names[pre] = key
        written.append(_dump(os.path.join(out_dir, "tokens_bpe_small.json"),
                             {"gguf": "tok_bpe_small.gguf", "texts": texts, "pre": names,
                              "results": results}))
        variants = {}
        for name, changes in SPM_VARIANTS.items():
            p = os.path.join(tmp, f"spm_{name}.gguf")
            rewrite_gguf(spm_path, p, changes)
            variants[name] = {"changes": changes, **_pack(run_oracle(p, texts, llama_python), False)}
        written.append(_dump(os.path.join(out_dir, "tokens_spm_small.json"),
                             {"gguf": "tok_spm_small.gguf", "texts": texts, "variants": variants}))

    if default_model is None:
        cand = os.path.expanduser(os.path.join(os.environ.get("ABI_MODEL_DIR", "~/.cache/abi/models"),
                                               "smollm2-135m-instruct.gguf"))
        default_model = cand if os.path.exists(cand) else None
    for model, name in ((default_model, "smollm2-135m-instruct"), (gemma, "gemma3-270m")):
        if model:
            result = _pack(run_oracle(model, texts, llama_python), True)
            result["model"] = os.path.basename(model)
            written.append(_dump(os.path.join(out_dir, f"tokens_{name}.json"), {"texts": texts, **result}))
    return written


def check_live(paths: list[str], llama_python: str = DEFAULT_LLAMA_PYTHON) -> bool:
    """Compare abi's tokenizer with llama.cpp, live, on each GGUF (any size; nothing is
    written): ids for every text and variant, detokenisation, EOG set and all pieces."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import abi.gguf
    from abi.errors import TokenizerError
    from abi.llm.tokenizer import Tokenizer, load_tokenizer

    texts, all_ok = all_texts(), True
    for path in paths:
        name = os.path.basename(path)
        meta = abi.gguf.load(path).metadata
        kind = f"{meta.get('tokenizer.ggml.model')}/{meta.get('tokenizer.ggml.pre')}"
        try:
            tok = load_tokenizer(meta)
        except TokenizerError as e:
            print(f"{name:34s} {kind:22s} refused: {e}")
            continue
        ref = run_oracle(path, texts, llama_python)
        info, bad = ref["info"], []
        for key, attr in (("n_vocab", "n_vocab"), ("bos", "bos_id"), ("eos", "eos_id"),
                          ("add_bos", "add_bos"), ("add_eos", "add_eos"), ("eog", "eog_ids")):
            ours = getattr(tok, attr, "<missing attribute>")
            ours = sorted(ours) if key == "eog" and not isinstance(ours, str) else ours
            if info[key] != ours:
                bad.append(f"{key}: ours {ours} llama.cpp {info[key]}")
        ours_api = isinstance(tok, Tokenizer)  # others (WordPiece): ids only
        if ours_api:
            for special in (False, True):
                key = f"pieces_sha256/{'special' if special else 'plain'}"
                if pieces_digest([tok.token_to_piece(i, special) for i in range(tok.n_vocab)]) != info[key]:
                    bad.append(f"{key} differs")
        n_ids = n_detok = 0
        for text, case in zip(texts, ref["cases"]):
            for variant, want in case["ids"].items():
                got = tok.encode(text, add_bos=None if variant.startswith("bos_") else False,
                                 special=variant.endswith("special"))
                n_ids += 1
                if got != want:
                    bad.append(f"ids {variant} {text[:40]!r}: ours {got[:12]} llama.cpp {want[:12]}")
            if ours_api:
                for key, want in case["detok"].items():
                    ids_name, render = key.split("/")
                    n_detok += 1
                    if tok.decode_bytes(case["ids"][ids_name], render == "special") != bytes.fromhex(want):
                        bad.append(f"detok {key} {text[:40]!r}")
        all_ok &= not bad
        print(f"{name:34s} {kind:22s} {'OK' if not bad else f'{len(bad)} DIFFERENCES'}: "
              f"{n_ids} id lists, {n_detok} detokenisations" + (f", {tok.n_vocab} pieces x2" if ours_api else ""))
        for line in bad[:8]:
            print("    " + line)
    return all_ok


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--llama-python", default=DEFAULT_LLAMA_PYTHON)
    ap.add_argument("--default-model")
    ap.add_argument("--gemma")
    ap.add_argument("--rebuild-vocab", action="store_true")
    ap.add_argument("--check", nargs="+", metavar="GGUF",
                    help="only compare abi with llama.cpp live on these files (writes nothing)")
    args = ap.parse_args(argv)
    if args.check:
        return 0 if check_live(args.check, args.llama_python) else 1
    for path in make_token_fixtures(args.out, args.llama_python, args.default_model, args.gemma,
                                    args.rebuild_vocab):
        print(f"{os.path.getsize(path):>9,d}  {path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--oracle":
        _oracle_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
