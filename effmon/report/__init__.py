"""Exports of a session: EfficientLLM JSON, effmon JSON, CSV, terminal summaries."""
