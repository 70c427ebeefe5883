"""One redaction policy, applied where anything is stored: session metadata, text columns, notices, source
errors, the logs kept beside a session, session file names (see docs/security.md).

What is hidden, keeping what is needed to rerun a job (flag names, variable names, hosts):
- values of flags whose name means a secret (``--api-key X``, ``--hf-token=X``, ``--password``, ``--auth`` ...)
  and of ``-p`` / ``-a`` for tools that take a password there (mysql, sshpass, redis-cli ...);
- HTTP credentials in headers (``Authorization: Bearer X``, ``Cookie:``, ``X-Api-Key:``);
- values under secret keys in JSON, YAML, TOML or ``key=value`` text (``{"api_key": "X"}``, ``password=X``);
- URL user info (``scheme://user:password@host``, also with an ``@`` in the password) and secret query
  parameters (``?token=X``);
- environment variables whose name means a secret (``HF_HUB_PASS``, ``TORCH_DIST_KEY``, ``WANDB_API_KEY``);
- values shaped like credentials anywhere: provider prefixes (``sk-``, ``hf_``, ``ghp_``, ``AKIA``, ``xoxb-``
  ...), JWTs, long high-entropy strings.

A user adds names and patterns in ``$EFFMON_HOME/config.toml``::

    [redact]
    names = ["seed", "deploy_ticket"]          # more secret names (flags, variables, keys)
    patterns = ['corp-[0-9a-f]{24}']           # regular expressions whose matches are hidden
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"

SECRET_WORDS = frozenset(
    "key apikey token secret secrets password passwd pwd pass passphrase auth authorization credential credentials "
    "bearer cookie signature sig privatekey".split()
)
"""A name is secret when one of its words (split at ``-``, ``_``, ``.``, case changes) is one of these."""
PASSWORD_FLAGS = {
    "mysql": "-p",
    "mysqldump": "-p",
    "mariadb": "-p",
    "mysqladmin": "-p",
    "sshpass": "-p",
    "redis-cli": "-a",
    "smbclient": "-U",
}
"""Tools that take a password after a short flag (``mysql -pSECRET``, ``redis-cli -a SECRET``)."""

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_VALUE_SHAPES = (
    r"hf_[A-Za-z0-9]{20,}",
    r"sk-[A-Za-z0-9_-]{16,}",
    r"gh[pousr]_[A-Za-z0-9]{20,}",
    r"github_pat_\w{20,}",
    r"xox[abposr]-[\w-]{10,}",
    r"AKIA[0-9A-Z]{16}",
    r"ya29\.[\w-]{20,}",
    r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]+",
    r"glpat-[\w-]{20,}",
    r"wandb_[A-Za-z0-9]{20,}",
    r"nvapi-[\w-]{20,}",
    r"AIza[\w-]{35}",
)
_HEADER = re.compile(
    r"\b((?:Proxy-)?Authorization|Cookie|Set-Cookie|X-Api-Key|Api-Key|X-Auth-Token|X-Access-Token)(\s*:\s*)([^\r\n\"']+)",
    re.IGNORECASE,
)
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<info>[^\s/?#]*:[^\s/?#]*)@(?=[^\s@/?#]*(?:[/?#\s]|$))", re.IGNORECASE
)
_TOOL_PASSWORD = re.compile(
    r"(?P<head>\b(?:mysql|mysqldump|mariadb|mysqladmin)\b[^\n;|&]*?\s-p)(?P<value>[^\s'\"]+)"
    r"|(?P<head2>\b(?:sshpass\s+-p|redis-cli\b[^\n;|&]*?\s-a)\s*)(?P<value2>[^\s'\"]+)"
)
"""The same tools inside a string (``bash -c "mysql -pSECRET ..."``)."""
_CANDIDATE = re.compile(r"[A-Za-z0-9+=_-]{24,}")


class RedactConfigError(ValueError):
    """The user's additions to the policy cannot be read: nothing is stored rather than stored unredacted."""


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(name)]


class Policy:
    def __init__(self, names: Sequence[str] = (), patterns: Sequence[str] = ()):
        self.words = SECRET_WORDS | {w for n in names for w in _words(n)}
        self.extra_names = {n.lower() for n in names}
        self.shapes = re.compile("|".join([*_VALUE_SHAPES, *patterns]))
        words = "|".join(sorted(self.words | self.extra_names, key=len, reverse=True))
        # "key": "value", key: value, key = value, --key=value, KEY=VALUE: the value goes, the key stays
        self.keyed = re.compile(
            rf"(?P<key>[\"']?[\w.-]*?(?:{words})[\w.-]*[\"']?)(?P<sep>\s*[:=]\s*)"
            r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&}\]]+)",
            re.IGNORECASE,
        )

    # -- names --------------------------------------------------------------------------------------------
    def secret_name(self, name: str) -> bool:
        plain = name.lstrip("-").lower()
        return plain in self.extra_names or any(w in self.words for w in _words(name.lstrip("-")))

    # -- values -------------------------------------------------------------------------------------------
    def text(self, text: str) -> str:
        """Free text (a log line, an error, a URL, a config string): every secret it holds hidden."""
        if not text:
            return text
        out = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
        out = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", out)
        out = _TOOL_PASSWORD.sub(lambda m: f"{m.group('head') or m.group('head2')}{REDACTED}", out)
        out = self.keyed.sub(self._keyed, out)
        out = self.shapes.sub(REDACTED, out)
        return _CANDIDATE.sub(lambda m: REDACTED if _looks_random(m.group()) else m.group(), out)

    def _keyed(self, m: re.Match[str]) -> str:
        key = m.group("key").strip("\"'")
        if not self.secret_name(key) or m.group("value") in (REDACTED, f'"{REDACTED}"', f"'{REDACTED}'"):
            return m.group()
        value = m.group("value")
        quote = value[0] if value[:1] in "\"'" else ""
        return f"{m.group('key')}{m.group('sep')}{quote}{REDACTED}{quote}"

    def argv(self, argv: Sequence[str]) -> list[str]:
        """A command line with secret values hidden and every flag name kept."""
        out: list[str] = []
        tool = os.path.basename(argv[0]) if argv else ""
        password_flag = PASSWORD_FLAGS.get(tool)
        hide_next = False
        for i, arg in enumerate(argv):
            if hide_next:
                out.append(REDACTED)
                hide_next = False
                continue
            if i and password_flag and arg.startswith(password_flag):
                if arg == password_flag:
                    hide_next = tool != "mysql"  # mysql -p alone prompts; its next word is not the password
                    out.append(arg)
                else:
                    out.append(password_flag + REDACTED)
                continue
            if arg.startswith("-") and "=" not in arg and self.secret_name(arg):
                out.append(arg)
                hide_next = True
                continue
            out.append(self.text(arg))
        return out

    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {k: REDACTED if self.secret_name(k) else self.text(v) for k, v in env.items()}

    def obj(self, obj: Any, key: str = "") -> Any:
        """Anything stored (metadata, a summary): strings as text, values under secret keys hidden."""
        if key and self.secret_name(key) and obj not in (None, "", [], {}) and not isinstance(obj, (bool, int, float)):
            return REDACTED
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {k: self.obj(v, str(k)) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            if key in ("command", "argv", "extra_args") and all(isinstance(a, str) for a in obj):
                return self.argv(list(obj))
            return [self.obj(v) for v in obj]
        return obj


def _looks_random(s: str) -> bool:
    """A long mix of upper, lower and digits with high entropy and no word structure: a key, not a path, a
    model id (``Mixtral-8x7B-Instruct``), a class name (``LlamaForCausalLM``) or a hex digest. Measured on
    random base62/base64/url-safe tokens of 24-43 characters: about 96% are caught; none of a list of real
    paths, model ids and identifiers is (tests/test_redact.py)."""
    if max(len(p) for p in re.split(r"[-_]", s)) < 16:
        return False  # short pieces joined by - or _: an identifier someone typed
    core = s.replace("-", "").replace("_", "")
    if not (re.search(r"[A-Z]", core) and re.search(r"[a-z]", core) and re.search(r"\d", core)):
        return False
    counts = Counter(core)
    entropy = -sum(c / len(core) * math.log2(c / len(core)) for c in counts.values())
    return entropy >= 3.9 and len(_WORD.findall(core)) / len(core) >= 0.3  # camel-case words are long


def policy() -> Policy:
    """The policy with the user's additions (``$EFFMON_HOME/config.toml``, ``[redact]``), read again when the
    file changes."""
    from effmon.core.paths import effmon_home

    path = effmon_home() / "config.toml"
    try:
        st = path.stat()
    except OSError:
        return _policy(None, 0)
    return _policy(str(path), st.st_mtime_ns)


@lru_cache(maxsize=4)
def _policy(path: str | None, mtime_ns: int) -> Policy:
    if path is None:
        return Policy()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        section = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("redact") or {}
        if not isinstance(section, dict):
            raise ValueError("[redact] must be a table")
        names = [str(n) for n in section.get("names") or []]
        patterns = [str(p) for p in section.get("patterns") or []]
        for p in patterns:
            re.compile(p)
    except (OSError, ValueError, re.error) as exc:
        raise RedactConfigError(
            f"{path}: the [redact] section is not valid ({exc}); effmon records nothing until it is fixed or removed"
        ) from None
    return Policy(names, patterns)


# What the rest of effmon calls.
def redact_text(text: str) -> str:
    return policy().text(text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    return policy().argv(argv)


def redact_obj(obj: Any) -> Any:
    return policy().obj(obj)


def redact_value(obj: Any, key: str = "") -> Any:
    """``obj`` stored under ``key`` (a metadata entry): hidden whole when the key names a secret."""
    return policy().obj(obj, key)


def is_secret_name(name: str) -> bool:
    return policy().secret_name(name)


# Environment variables worth keeping in a session (what shapes a GPU job's behaviour).
ENV_PREFIXES = (
    "CUDA_",
    "NCCL_",
    "TORCH",
    "PYTORCH_",
    "HF_",
    "TRANSFORMERS_",
    "VLLM_",
    "OMP_",
    "MKL_",
    "ACCELERATE_",
    "NVIDIA_",
    "WANDB_",
    "TOKENIZERS_",
)
ENV_NAMES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def redact_env(env: dict[str, str], keep_all: bool = False) -> dict[str, str]:
    """The environment worth recording, secrets hidden. ``keep_all`` keeps every name."""
    kept = {k: v for k, v in sorted(env.items()) if keep_all or k.startswith(ENV_PREFIXES) or k in ENV_NAMES}
    return policy().env(kept)
