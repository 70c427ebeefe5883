"""The headless core: declarations, the session store, the sampler, clocks, energy integration, the recording
lifecycle and where sessions live. It imports no UI, torch or vLLM (``lint-imports`` checks it)."""
