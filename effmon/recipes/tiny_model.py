"""A tiny Llama-shaped model with random weights and a locally trained tokenizer (with a chat template),
saved once under $EFFMON_HOME/models: what the ``tiny-cpu`` serving preset serves, offline."""

from __future__ import annotations

import sys
from pathlib import Path

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def ensure(directory: Path) -> Path:
    if (directory / "config.json").exists() and (directory / "tokenizer.json").exists():
        return directory
    from transformers import LlamaConfig, LlamaForCausalLM

    from effmon.recipes.finetune import corpus, tiny_tokenizer

    tok = tiny_tokenizer(corpus(512))
    tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    directory.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1])))
