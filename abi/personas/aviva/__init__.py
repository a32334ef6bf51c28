"""Aviva, the direct expert: query analysis, knowledge retrieval, code answers, fact
checking."""
