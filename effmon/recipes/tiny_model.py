"""A tiny Llama-shaped model with random weights and a locally trained tokenizer (with a chat template),
saved once under $EFFMON_HOME/models: what the ``tiny-cpu`` serving preset serves, offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def tiny_llama(tokenizer: Any, max_positions: int = 512) -> Any:
    """A two-layer, 64-wide Llama with random weights for ``tokenizer``: seconds on a CPU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def ensure(directory: Path) -> Path:
    if (directory / "config.json").exists() and (directory / "tokenizer.json").exists():
        return directory
    from effmon.recipes.quiet import quiet_start

    quiet_start(directory.parent / "build-notices.log")  # torchao's and torch's import notices: not on screen
    import torch
    from transformers.utils import logging as hf_logging

    from effmon.recipes.finetune import corpus, tiny_tokenizer

    hf_logging.disable_progress_bar()  # a one-file model writes in milliseconds: no bar

    tok = tiny_tokenizer(corpus(512))
    tok.chat_template = CHAT_TEMPLATE
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # the same weights every time: what it answers (greedy) does not change between builds
    tiny_llama(tok).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1])))
