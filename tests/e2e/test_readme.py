"""The README as a new user reads it: every effmon command in it parses, and the ones a CPU machine can run work,
in order, in a fresh home, without a traceback (issue 12)."""

import re
import shlex
import sys

import pytest

from tests.conftest import REPO, run_effmon

README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    """Every ``effmon ...`` line of the README's bash blocks, without its comment."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("pip install . && effmon"):
                line = line.split("&& ", 1)[1]
            if line.startswith("effmon"):
                out.append(line)
    return out


def test_the_readme_has_commands_to_check():
    assert len(readme_commands()) >= 15  # the extraction found the blocks (18 when this was written)


@pytest.mark.parametrize("line", readme_commands())
def test_every_effmon_command_in_the_readme_parses(line):
    from effmon.cli import build_parser

    argv = shlex.split(line)[1:]
    if "--" in argv:
        argv = argv[: argv.index("--")]
    parser, handlers = build_parser()
    args = parser.parse_args(argv or ["top"])
    assert args.cmd in handlers


# What a new user on a CPU machine runs, in the README's order (the rest needs a GPU, a server the user
# started, or the user's own script). Each must appear in the README as written here.
WALK = [
    "effmon demo",
    "effmon sessions",
    "effmon sessions show last",
    "effmon report last --format efficientllm -o run.json",
    "effmon run --preset lora-tiny",
    "effmon run --preset dora-tiny --set r=16",
    "effmon serve tiny-cpu --load --requests 50",
    "effmon report last --format html -o report.html",
    "effmon report last --format md -o report.md",
    "effmon compare last~1 last",
    "effmon compare last~1 last -f html -o cmp.html",
]


def test_the_walk_through_follows_the_readme():
    commands = readme_commands()
    for line in WALK:
        assert line in commands, line


@pytest.mark.slow
def test_a_new_user_follows_the_readme_without_a_traceback(tmp_path):
    home = tmp_path / "home"
    for line in WALK:
        res = run_effmon(*shlex.split(line)[1:], env_home=home, timeout=600, cwd=tmp_path)
        assert res.returncode == 0, (line, res.stderr[-2000:])
        assert "Traceback" not in res.stderr, (line, res.stderr[-2000:])
    assert (tmp_path / "run.json").stat().st_size > 1000
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    assert (tmp_path / "cmp.html").exists() and (tmp_path / "report_files").is_dir()
    listing = run_effmon("sessions", "--json", env_home=home)
    import json

    statuses = [s["status"] for s in json.loads(listing.stdout)]
    assert statuses == ["complete"] * 4, statuses  # demo, two fine-tunes, the served load


def test_the_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    test_command = "pip install torch==2.13.0 -e '.[test]' && bash scripts/check"
    assert test_command in README and test_command in ci
    assert sys.version_info >= (3, 10)
