"""Reads a GGUF file with the `gguf` package (the test oracle) into the same tables abi's
reader produces, so the two can be compared with ==."""
from __future__ import annotations

import gguf


def oracle_tables(path):
    r = gguf.GGUFReader(path)
    metadata, types = {}, {}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        metadata[key] = value
        t = [int(x) for x in field.types]
        types[key] = tuple(t[:2]) if t[0] == gguf.GGUFValueType.ARRAY else t[0]
    tensors = {t.name: (tuple(int(d) for d in reversed(t.shape.tolist())), int(t.tensor_type),
                        int(t.data_offset), int(t.n_bytes)) for t in r.tensors}
    return metadata, types, tensors


def _flatten(value):
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [x for v in value for x in _flatten(v)]
    return value


def our_tables(path):
    """abi's tables in gguf-py's conventions: nested arrays flattened, and an empty array's
    type given as (ARRAY,) alone, since gguf-py reports them so."""
    import abi.gguf

    f = abi.gguf.load(path)
    types = {}
    for k, v in f.metadata_types.items():
        if isinstance(v, tuple):
            types[k] = (int(v[0]),) if f.metadata[k] == [] else (int(v[0]), int(v[1]))
        else:
            types[k] = int(v)
    metadata = {k: _flatten(v) for k, v in f.metadata.items()}
    tensors = {t.name: (t.shape, int(t.ggml_type), t.offset, t.nbytes) for t in f.tensors.values()}
    return metadata, types, tensors
