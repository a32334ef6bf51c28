"""Abi, the router and moderator: sentiment analysis, content policy, query
classification and the routing rules engine."""
