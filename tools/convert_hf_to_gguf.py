"""Convert a Hugging Face BERT model folder to GGUF (same as ``python -m abi convert hf-to-gguf``).

    python tools/convert_hf_to_gguf.py DIR [--outtype f32|f16|q8_0] [-o FILE]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from abi.embeddings.convert import main  # noqa: E402
from abi.errors import AbiError  # noqa: E402

if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except AbiError as exc:
        print(f"convert_hf_to_gguf: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
