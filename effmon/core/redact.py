"""Keep secrets out of sessions: tokens and keys in arguments and environment variables."""

from __future__ import annotations

import re

REDACTED = "<redacted>"

_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|API[_-]?KEY|ACCESS[_-]?KEY|PRIVATE[_-]?KEY|CREDENTIAL|AUTH|COOKIE|SESSION[_-]?KEY|SIGNATURE)",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}"
    r"|xox[abposr]-[\w-]{10,}|AKIA[0-9A-Z]{16}|ya29\.[\w-]{20,}|eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]+"
    r"|wandb_[A-Za-z0-9]{20,}|[0-9a-f]{40}|glpat-[\w-]{20})$"
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)

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


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redact_value(value: str) -> str:
    if _SECRET_VALUE.match(value):
        return REDACTED
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", value)


def redact_argv(argv: list[str]) -> list[str]:
    """``--api-key X``, ``--api-key=X``, ``TOKEN=X`` and token-shaped values become ``<redacted>``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if arg.startswith("-") and "=" in arg:
            flag, _, _ = arg.partition("=")
            out.append(
                f"{flag}={REDACTED}" if is_secret_name(flag) else f"{flag}={redact_value(arg.partition('=')[2])}"
            )
            continue
        if arg.startswith("-") and is_secret_name(arg):
            out.append(arg)
            hide_next = True
            continue
        if "=" in arg and not arg.startswith("-"):
            name, _, value = arg.partition("=")
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) and is_secret_name(name):
                out.append(f"{name}={REDACTED}")
                continue
        out.append(redact_value(arg))
    return out


def redact_env(env: dict[str, str], keep_all: bool = False) -> dict[str, str]:
    """The environment worth recording, secrets replaced. ``keep_all`` keeps every name."""
    out = {}
    for name, value in sorted(env.items()):
        if not keep_all and not (name.startswith(ENV_PREFIXES) or name in ENV_NAMES):
            continue
        out[name] = REDACTED if is_secret_name(name) else redact_value(value)
    return out
