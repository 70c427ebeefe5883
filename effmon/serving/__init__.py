"""Serving: launching inference servers from presets, watching their metrics endpoint, and loading them."""
