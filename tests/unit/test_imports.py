"""The core never imports Textual, torch, transformers or vllm at module level."""

import subprocess
import sys

HEAVY = ("textual", "torch", "transformers", "vllm", "peft", "matplotlib")


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    import json

    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_effmon_and_cli_is_light():
    loaded = _loaded_after("import effmon, effmon.cli\neffmon.cli.build_parser()")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_recording_and_metrics_modules_are_light():
    loaded = _loaded_after(
        "import effmon.recording, effmon.metrics, effmon.report.formats, effmon.sources.nvml, "
        "effmon.sources.host, effmon.sources.replay, effmon.core.store, effmon.core.sampler"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_probe_would_see_a_heavy_import():
    """The probe itself works: importing textual shows up (textual is a core dependency)."""
    assert "textual" in _loaded_after("import textual")
