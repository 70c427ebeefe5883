"""Counting the tokens of a streamed answer when the server does not say (no ``usage``), and how many tokens
each chunk carried (for inter-token latency per token).

A server that streams several tokens a chunk (``transformers serve`` holds back byte tokens, vLLM with a stream
interval, speculative decoding) makes chunks and tokens differ; counting chunks as tokens then understates
tokens and overstates TPOT. Two ways to know better, in the order effmon tries them:

- **the model's tokenizer** (``--tokenizer MODEL_DIR``, a local folder with ``tokenizer.json`` or the file
  itself; ``effmon serve`` passes the folder of the model it serves): the answer's text is encoded once, and
  each token is given to the chunk its last character arrived in, so tokens per chunk are known too;
- **the server's ``/tokenize``** (vLLM has one): the total only, asked after the request ended.

Neither: the figures say *chunks*, never tokens.
"""

from __future__ import annotations

import bisect
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class TokenizerError(Exception):
    """A ``--tokenizer`` that cannot be used; the message says what to give instead."""


class LocalTokenizer:
    """The model's own tokenizer, read with the ``tokenizers`` library (what transformers uses underneath)."""

    def __init__(self, path: str | Path):
        p = Path(path).expanduser()
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            hint = "a folder with tokenizer.json (a model saved with save_pretrained) or the tokenizer.json file"
            raise TokenizerError(f"--tokenizer {path}: no tokenizer.json there; give {hint}")
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TokenizerError("--tokenizer needs the tokenizers package: pip install tokenizers") from None
        try:
            self.tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # the library raises a bare Exception for a damaged file
            raise TokenizerError(f"--tokenizer {file}: not a tokenizer file ({str(exc)[:200]})") from None
        self.name = f"tokenizer {p.name or p}"

    def chunk_counts(self, pieces: list[str]) -> list[int]:
        """Tokens in each chunk: the text is encoded whole (a token may span two chunks; it belongs to the chunk
        that completed it, when it could first be shown)."""
        ends, total = [], 0
        for piece in pieces:
            total += len(piece)
            ends.append(total)
        counts = [0] * len(pieces)
        if not pieces:
            return counts
        enc = self.tok.encode("".join(pieces), add_special_tokens=False)
        for start, end in enc.offsets:
            if end <= start:  # a token with no text of its own (added, special)
                continue
            counts[min(bisect.bisect_left(ends, end), len(pieces) - 1)] += 1
        return counts


class ServerTokenizer:
    """A server's ``POST /tokenize`` (vLLM: ``{"model", "prompt"}`` → ``{"count", "tokens"}``): totals only."""

    name = "server /tokenize"

    def __init__(self, base_url: str, model: str):
        self.url, self.model = base_url.rstrip("/") + "/tokenize", model

    def body(self, text: str) -> dict[str, Any]:
        return {"model": self.model, "prompt": text, "add_special_tokens": False}

    @staticmethod
    def count_of(answer: Any) -> int | None:
        if isinstance(answer, dict):
            count = answer.get("count")
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                return count
            if isinstance(answer.get("tokens"), list):
                return len(answer["tokens"])
        return None

    def probe(self, timeout_s: float = 5.0) -> bool:
        """Whether the server has a working /tokenize (asked once, before the load)."""
        request = urllib.request.Request(
            self.url, json.dumps(self.body("hello world")).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return self.count_of(json.loads(resp.read(65536))) is not None
        except (urllib.error.URLError, OSError, ValueError):
            return False

    async def count(self, session: Any, text: str) -> int | None:
        import aiohttp

        try:
            async with session.post(self.url, json=self.body(text), timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    return None
                return self.count_of(await resp.json(content_type=None))
        except Exception:  # a count that cannot be had leaves the request's tokens unknown, never fails it
            return None


def per_token_gaps(gaps: list[float], chunk_tokens: list[int]) -> list[float]:
    """Inter-token latency per token, from the gaps between content chunks and the tokens each carried: a chunk
    of n tokens that came g after the one before stands for n gaps of g/n. ``gaps[i]`` is the gap before chunk
    i+1; tokens that came with the first chunk have no gap (they are in TTFT). A chunk with no token of its own
    passes its wait on to the next chunk that has one."""
    out: list[float] = []
    carried = 0.0
    for gap, n in zip(gaps, chunk_tokens[1:], strict=False):
        carried += gap
        if n > 0:
            out += [carried / n] * n
            carried = 0.0
    return out
