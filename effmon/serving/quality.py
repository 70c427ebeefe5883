"""A model's quality score, measured: perplexity on a local text file, with the very weights a session served.

The text is tokenized with the model folder's own tokenizer and scored in windows of ``window`` tokens (each
window's tokens predicted from those before them in it, as ``labels = input_ids`` does); the perplexity is
exp(mean negative log-likelihood) over every predicted token. Lower is better, so MCR, which needs a score where
higher is better, takes its inverse: **score = 1 / perplexity**, the geometric mean of the probability the model
gives each next token (between 0 and 1). Then MCR = (bits_original / bits_compressed) x (ppl_original /
ppl_compressed). Offline: the folder and the file are local; nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class QualityError(Exception):
    code = 2


def perplexity(
    model_dir: str | Path, text_file: str | Path, window: int = 128, max_tokens: int = 4096
) -> dict[str, Any]:
    """The model's perplexity on the file: {"perplexity", "score", "tokens", "nll"}."""
    folder, path = Path(model_dir), Path(text_file)
    if not path.is_file():
        raise QualityError(
            f"ppl:{text_file}: no such file (give a local text file, e.g. ppl:effmon/data/eval-text.txt)"
        )
    if not (folder / "config.json").is_file():
        raise QualityError(f"{folder}: the session's model folder is gone; perplexity needs its weights")
    from effmon.recipes.quantize import quiet_torchao

    quiet_torchao()  # a quantized folder imports torchao as it loads
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise QualityError("a perplexity needs torch and transformers: pip install 'effmon[serve]'") from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line of ours says what was measured; no bar per model
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok(path.read_text(encoding="utf-8", errors="replace"), return_tensors="pt").input_ids[0][:max_tokens]
    if len(ids) < 2:
        raise QualityError(f"ppl:{text_file}: fewer than two tokens of text")
    total, counted = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start : start + window + 1].unsqueeze(0)
            if chunk.shape[1] < 2:
                break
            loss = model(input_ids=chunk, labels=chunk).loss  # mean over the chunk's predicted tokens
            total += float(loss) * (chunk.shape[1] - 1)
            counted += chunk.shape[1] - 1
    nll = total / counted
    return {"perplexity": math.exp(nll), "score": math.exp(-nll), "tokens": counted, "nll": nll,
            "file": str(path), "model_dir": str(folder)}  # fmt: skip


def session_score(session: str | Path, spec: str) -> dict[str, Any]:
    """``--perf ppl:FILE`` for one session: the perplexity of the model folder it served (its meta's
    ``model_dir``)."""
    from effmon.core.store import SessionReader

    with SessionReader(Path(session)) as reader:
        meta = reader.meta()
    if not meta.get("model_dir"):
        raise QualityError(
            f"session {meta.get('name')} does not say which model folder it served (effmon serve PRESET records "
            "it); give a number instead: --perf 0.47"
        )
    if "--quantization" in (meta.get("command") or []):
        raise QualityError(
            f"session {meta.get('name')}: the server quantized the weights as it loaded them (--quantization): its "
            "model folder holds the unquantized ones, so a perplexity of it would not be this run's; give a number "
            "measured elsewhere: --perf 0.47"
        )
    return perplexity(meta["model_dir"], spec.removeprefix("ppl:")) | {"precision": meta.get("precision")}
