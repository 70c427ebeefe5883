"""effmon: a live profiler for LLM training and inference efficiency.

The core (this package minus ``effmon.tui``) imports no Textual, torch, transformers
or vllm at module level, so headless recording and exports stay cheap.
"""

__version__ = "0.1.0"
