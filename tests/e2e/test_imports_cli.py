"""The core never imports Textual, torch, transformers or vllm at module level."""

import subprocess
import sys

from tests.unit.test_imports import _loaded_after


def test_the_in_process_tracker_is_stdlib_only():
    """effmon.track runs inside the watched job: with a step written, nothing but the standard library and
    effmon's own tiny modules is loaded."""
    code = (
        "import os, tempfile; os.environ['EFFMON_TRACK_DIR'] = tempfile.mkdtemp()\n"
        "import effmon.track as et\nwith et.step(tokens=1):\n    pass\net.flush()\n"
        "import sys, json\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('effmon'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json

    assert set(json.loads(out.strip().splitlines()[-1])) == {
        "effmon",
        "effmon.track",
        "effmon.core",
        "effmon.core.files",
    }
    bare = _loaded_after("pass")  # what the interpreter's site hooks load anyway (certifi, setuptools' hack ...)
    loaded = _loaded_after(code.rsplit("import sys, json", 1)[0]) - bare
    assert loaded <= set(sys.stdlib_module_names) | {"effmon"}, loaded - set(sys.stdlib_module_names)
