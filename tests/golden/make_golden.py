"""Reports of the bundled H100 trace, written by the CLI, normalised for what legitimately varies
(host name, wall-clock time, file paths and sizes). ``tests/e2e/test_golden.py`` compares the current code's
output with the files this wrote before the metrics were restructured (issue 11).

    python -m tests.golden.make_golden        # rewrite the golden files (only when a change is intended)
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TRACE = REPO / "effmon" / "data" / "h100_phases.jsonl"

# (file name, effmon arguments after "report SESSION")
REPORTS: list[tuple[str, list[str]]] = [
    ("whole.table.txt", ["--format", "table"]),
    ("whole.efficientllm.json", ["--format", "efficientllm"]),
    ("whole.efficientllm-pretrain.json", ["--format", "efficientllm-pretrain"]),
    ("whole.json", ["--format", "json"]),
    ("whole.csv", ["--format", "csv"]),
    ("lora.table.txt", ["--phase", "lora_finetune", "--format", "table"]),
    ("lora.efficientllm.json", ["--phase", "lora_finetune", "--format", "efficientllm"]),
    ("lora.json", ["--phase", "lora_finetune", "--format", "json"]),
    ("generate.json", ["--phase", "generate", "--format", "json"]),
    ("generate.efficientllm.json", ["--phase", "generate", "--format", "efficientllm"]),
    ("window.json", ["--window", "10:60", "--format", "json"]),
    ("window.csv", ["--window", "10:60", "--format", "csv"]),
    (
        "mcr.efficientllm.json",
        ["--format", "efficientllm", "--precision", "int4", "--perf", "0.4361", "--baseline-perf", "0.4719"],
    ),
]


def effmon(home: Path, *args: str) -> str:
    env = dict(os.environ, EFFMON_HOME=str(home), COLUMNS="120", NO_COLOR="1", TZ="UTC")
    res = subprocess.run(
        [sys.executable, "-m", "effmon", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    if res.returncode != 0:
        raise RuntimeError(f"effmon {' '.join(args)} failed ({res.returncode}): {res.stderr}")
    return res.stdout


def normalise(text: str, home: Path) -> str:
    """Replace what differs between machines and runs, nothing else."""
    text = text.replace(str(TRACE), "<trace>").replace(str(home), "<home>")
    host = re.escape(socket.gethostname())
    text = re.sub(rf'"host": "{host}"', '"host": "<host>"', text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<wall-clock>", text)
    text = re.sub(r"(<home>\S*) \([0-9.]+ [KMG]?B\)", r"\1 (<size>)", text)
    return text


def replay(home: Path) -> None:
    effmon(home, "record", "--replay", str(TRACE), "--as-fast-as-possible", "--name", "golden", "-q")


def render_all(home: Path) -> dict[str, str]:
    out = {name: normalise(effmon(home, "report", "golden", *args), home) for name, args in REPORTS}
    out["sessions-show.txt"] = normalise(effmon(home, "sessions", "show", "golden"), home)
    a, b = home / "lora.json", home / "generate.json"
    a.write_text(effmon(home, "report", "golden", "--phase", "lora_finetune", "--format", "efficientllm"))
    b.write_text(effmon(home, "report", "golden", "--phase", "generate", "--format", "efficientllm"))
    out["compare.json"] = normalise(effmon(home, "compare", str(a), str(b), "--format", "json"), home)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        replay(home)
        for name, text in render_all(home).items():
            (HERE / name).write_text(text, encoding="utf-8")
            try:
                json.loads(text)
                kind = "json"
            except ValueError:
                kind = "text"
            print(f"wrote {name} ({kind}, {len(text)} characters)")


if __name__ == "__main__":
    main()
