"""Embedded default configuration, used when `llm-router serve` runs without --config."""
