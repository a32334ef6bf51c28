"""Batch jobs over a corpus: ``embed`` and ``generate`` for every item of a JSONL, Parquet or
text file, into a folder of atomically written shards that ``--resume`` completes. Local (one
process, one model) by default; on a Ray cluster through Ray Data with ``ray=RayOptions()``."""
from __future__ import annotations

from .inputs import read_items
from .job import JobReport, RayOptions, run_job
from .shards import read_results
from .work import JobSpec, Runner

__all__ = ["JobSpec", "JobReport", "RayOptions", "Runner", "run_job", "read_items", "read_results"]
