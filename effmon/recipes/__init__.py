"""Bundled workloads that presets run (they need the ``train`` extra: torch, transformers, peft)."""
