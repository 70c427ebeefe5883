"""Safe by default (docs/security.md): no secret is stored or shown, what effmon creates is private, the track
channel cannot be turned against its user, nothing raw reaches a terminal or a document, -o never replaces what
it should not, and nothing listens beyond 127.0.0.1."""

from __future__ import annotations

import base64
import http.server
import json
import os
import random
import socket
import stat
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from effmon.core.redact import REDACTED, Policy, redact_argv, redact_text
from effmon.core.store import SessionReader
from tests.conftest import REPO, run_effmon
from tests.e2e.test_serve import HAVE_TSERVE, free_port

PY = sys.executable
ON_TRACE = [PY, "-m", "tests.effmon_on_trace"]
"""effmon with the H100 trace behind NVML: sessions hold GPU readings, so every report format has something."""
MARK = b"SeCrEt"
"""Every secret of the corpus holds this; after the commands no file and no output may hold it."""

ARGV_SECRETS = [
    "-u",
    "root",
    "-pPw0rdSeCrEt1",  # mysql's password flag
    "--api-key",
    "kq7SeCrEt2",
    "--hf-token=hf_SeCrEt3abcdefghijklmnopqrst",
    "-H",
    "Authorization: Bearer tokSeCrEt4",
    "--config",
    '{"api_key": "cfgSeCrEt5", "lr": 0.1}',
    "--key",
    "keySeCrEt6",
    "mysql://dbuser:p@ssSeCrEt7@db.internal:3306/train",
    "https://hub.internal/files?token=qtokSeCrEt8&rev=main",
    "--cfg",
    "password: yamlSeCrEt9",
    "--lr",
    "1e-4",
]
ENV_SECRETS = {
    "HF_HUB_PASS": "envpassSeCrEt10",
    "TORCH_DIST_KEY": "distkeySeCrEt11",
    "HF_TOKEN": "hf_SeCrEt12abcdefghijklmnopq",
    "VLLM_EXTRA": "sk-SeCrEt13abcdefghijklmnop",  # a kept variable whose value is shaped like a key
}


# -- the policy ---------------------------------------------------------------------------------------------
def test_the_policy_hides_each_kind_of_secret_and_keeps_the_flag_names():
    out = redact_argv(["mysql", *ARGV_SECRETS])
    joined = " ".join(out)
    assert MARK.decode() not in joined, joined
    assert out[:4] == ["mysql", "-u", "root", f"-p{REDACTED}"]
    for kept in (
        "--api-key",
        "--hf-token=",
        "-H",
        "Authorization:",
        "--config",
        '"api_key"',
        '"lr": 0.1',
        "--key",
        "@db.internal:3306/train",
        "token=",
        "rev=main",
        "password:",
        "--lr",
        "1e-4",
    ):
        assert kept in joined, kept
    assert "mysql -p db" == redact_text("mysql -p db")  # -p alone makes mysql prompt: nothing to hide
    assert redact_text('bash -c "sshpass -p pwSeCrEt ssh h; redis-cli -a rpSeCrEt ping"').count(REDACTED) == 2


def test_names_are_secret_by_their_words_not_by_substrings():
    p = Policy()
    for name in ("api_key", "--hf-token", "HF_HUB_PASS", "TORCH_DIST_KEY", "dbPassword", "X-Auth", "client_secret"):
        assert p.secret_name(name), name
    for name in ("max_tokens", "--tokenizer", "keys", "passes", "monkey", "--max-num-batched-tokens", "passage"):
        assert not p.secret_name(name), name


def test_long_random_strings_are_hidden_and_real_identifiers_are_not():
    rng = random.Random(13)
    alphabet = string.ascii_letters + string.digits
    keys = ["".join(rng.choice(alphabet) for _ in range(n)) for n in (24, 32, 40) for _ in range(300)]
    keys += [base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=") for _ in range(300)]
    caught = sum(redact_text(k) != k for k in keys) / len(keys)
    assert caught >= 0.9, caught  # docs/security.md says about 96%
    legit = [
        "/home/AliceSmith/Projects/MyModel2024/trainingRuns/run7",
        "TheBloke/Mixtral-8x7B-Instruct-v0.1-GPTQ",
        "hf-internal-testing/tiny-random-LlamaForCausalLM",
        "LlamaForCausalLMWithValueHead2",
        "MetaLlama31_8BInstructAWQ4bit",
        "nvidia/Llama-3.1-Nemotron-70B-Instruct-HF",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "GPU-5f3e9a2b-1c4d-4e6f-8a9b-0c1d2e3f4a5b",
        "Linux-5.15.0-1063-nvidia-x86_64-with-glibc2.35",
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
        "--max-num-batched-tokens 8192 --gpu-memory-utilization 0.9 --kv-cache-dtype fp8",
        "20261123-101010-train-lora-r16-alpha32",
    ]
    for s in legit:
        assert redact_text(s) == s


def test_user_names_and_patterns_from_the_config_file(home):
    home.mkdir()
    (home / "config.toml").write_text('[redact]\nnames = ["seed"]\npatterns = ["corp-[0-9a-f]{24}"]\n')
    assert redact_argv(["t", "--seed", "7", "corp-0123456789abcdef01234567"]) == ["t", "--seed", REDACTED, REDACTED]
    (home / "config.toml").write_text('[redact]\npatterns = ["("]\n')
    res = run_effmon("record", "--", PY, "-c", "pass", env_home=home)
    assert res.returncode == 2 and "config.toml: the [redact] section is not valid" in res.stderr
    assert "Traceback" not in res.stderr
    assert not list((home / "sessions").glob("*.effmon")) if (home / "sessions").exists() else True


# -- the corpus through every command ------------------------------------------------------------------------
class _Metrics(http.server.BaseHTTPRequestHandler):
    """A vLLM-like /metrics endpoint that notes the Authorization header it was sent."""

    seen: list[str | None] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        _Metrics.seen.append(self.headers.get("Authorization"))
        body = b'# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name="m"} 2\n'
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve_metrics() -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _openai_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [PY, "-m", "tests.openai_server", "--port", str(port), "--ttft", "0", "--itl", "0"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the test server did not start")


TRAIN = """
import sys, time
import effmon.track as et
et.model_info(type="llama", params=1000, token="modeltokSeCrEt14")
et.phase("warmup sk-SeCrEt15abcdefghijklmnopq")
for i in range(3):
    with et.step(tokens=10, samples=1):
        time.sleep(0.05)
et.flush()
time.sleep(1.2)
"""


READS = """
import contextlib, io, json, sys
from effmon.cli import main
results = []
for args in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    results.append([args, code, out.getvalue(), err.getvalue()])
sys.stdout.write(json.dumps(results))
"""


def _run_in_one_process(commands: list[list[str]], env: dict[str, str]) -> list[list]:
    """Many reading commands through effmon's real entry point, in one interpreter (start-up paid once)."""
    res = subprocess.run(
        [PY, "-c", READS],
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
        check=True,
    )
    return json.loads(res.stdout)


def _walk_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.mark.skipif(not HAVE_TSERVE, reason="needs transformers[serving] (installed by the test extra)")
def test_a_secrets_corpus_never_reaches_a_file_or_an_output(tmp_path):
    """record, run, serve (extra args), load and attach --url with secrets in argv, environment, URLs, headers
    and config strings; then every file under the effmon home and every report format: zero hits."""
    home, out = tmp_path / "home", tmp_path / "reports"
    out.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake_mysql = bindir / "mysql"  # a tool that takes its password as -pSECRET
    fake_mysql.write_text(f"#!{PY}\nimport time\ntime.sleep(1.2)\n")
    fake_mysql.chmod(0o755)
    env = dict(os.environ, EFFMON_HOME=str(home), COLUMNS="120", **ENV_SECRETS)
    outputs: list[str] = []

    def effmon(*args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        res = subprocess.run(ON_TRACE + list(args), capture_output=True, text=True, env=env, timeout=240, cwd=REPO)
        outputs.append(res.stdout + res.stderr)
        assert res.returncode in ok, (args, res.stderr[-2000:])
        return res

    effmon("record", "--", str(fake_mysql), *ARGV_SECRETS)
    (tmp_path / "train.py").write_text(TRAIN)
    effmon("run", "--headless", "--", PY, str(tmp_path / "train.py"), *ARGV_SECRETS[3:])

    preset = tmp_path / "leaky.toml"
    extra = ["--api-key", "sk-SeCrEt16abcdefghijklmnop", "--hf-token=hf_SeCrEt17abcdefghijklmnopq"]
    preset.write_text(
        'kind = "serve"\n[serve]\nengine = "transformers"\nmodel = "tiny"\ndtype = "float32"\n'
        f"port = {free_port()}\nextra_args = {json.dumps(extra)}\n"
    )
    effmon("serve", str(preset), "--timeout", "60", ok=(1,))  # transformers serve refuses --api-key: it dies

    port = free_port()
    server = _openai_server(port)
    try:
        effmon(
            "load",
            f"http://alice:urlpwSeCrEt18@127.0.0.1:{port}",
            "--model",
            "m",
            "--requests",
            "3",
            "--output-tokens",
            "4",
            "--json",
            str(out / "load.json"),
        )
    finally:
        server.kill()
    metrics, mport = _serve_metrics()
    try:
        effmon("attach", "--url", f"http://bob:urlpwSeCrEt19@127.0.0.1:{mport}", "--headless", "--duration", "2")
    finally:
        metrics.shutdown()
    assert _Metrics.seen and _Metrics.seen[-1] == "Basic " + base64.b64encode(b"bob:urlpwSeCrEt19").decode()

    sessions = sorted((home / "sessions").glob("*.effmon"))
    assert len(sessions) == 5, sessions
    assert all("SeCrEt" not in p.name and "urlpw" not in p.name for p in (home / "sessions").iterdir())
    reads: list[list[str]] = [["sessions"], ["sessions", "--json"]]
    reads.append(["compare", *map(str, sessions[:2]), "-f", "md", "-o", str(out / "cmp.md")])
    for i, session in enumerate(sessions):
        for fmt in ("table", "efficientllm", "efficientllm-pretrain", "json", "csv", "md", "html"):
            reads.append(["report", str(session), "-f", fmt, "-o", str(out / f"{i}.{fmt}")])
        reads += [["report", str(session)], ["sessions", "show", str(session)]]  # to the terminal
    for args, code, stdout, stderr in _run_in_one_process(reads, env):
        outputs.append(stdout + stderr)
        assert code == 0, (args, stderr[-2000:])

    with SessionReader(sessions[0]) as r:  # the flag names are kept: the job can be rerun
        command = r.meta()["command"]
    assert "--api-key" in command and "-p" + REDACTED in command and "--lr" in command
    with SessionReader([s for s in sessions if "leaky" in s.name][0]) as r:
        assert r.meta()["preset"]["extra_args"] == ["--api-key", REDACTED, f"--hf-token={REDACTED}"]
    hits = [str(p) for p in _walk_files(home) + _walk_files(out) if MARK in p.read_bytes()]
    hits += [o[o.index("SeCrEt") - 40 : o.index("SeCrEt") + 20] for o in outputs if "SeCrEt" in o]
    assert not hits, hits
    assert (home / "sessions").glob("*.log")  # the server's log was kept, redacted


def test_a_launched_commands_output_is_kept_redacted(home):
    """What the dashboard's launched command prints goes to NAME.log through effmon, redacted line by line."""
    from effmon.recording import RecordOptions, record_command

    script = "import sys; print('token=lineSeCrEt20'); print('Authorization: Bearer hdrSeCrEt21', file=sys.stderr)"
    script += "; sys.stdout.write('no newline at the end hf_SeCrEt22abcdefghijklmnopqr')"
    code = record_command([PY, "-c", script], RecordOptions(quiet=True), capture_output=True)
    assert code == 0
    log = next((home / "sessions").glob("*.log"))
    text = log.read_text()
    assert "SeCrEt" not in text and text.count(REDACTED) == 3 and "no newline at the end" in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


# -- private files ---------------------------------------------------------------------------------------------
def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_files_are_private_whatever_the_umask(tmp_path):
    home = tmp_path / "new-home"
    env = dict(os.environ, EFFMON_HOME=str(home))
    env.pop("XDG_RUNTIME_DIR", None)
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "train.py").write_text(TRAIN.replace("time.sleep(1.2)", "time.sleep(2.5)"))
    proc = subprocess.Popen(
        [PY, "-m", "effmon", "run", "--headless", "--", PY, str(tmp_path / "train.py")],
        env=env,
        preexec_fn=lambda: os.umask(0),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: dict[str, int] = {}
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:  # what exists only while it records
        for p in (home / "sessions").glob("*") if (home / "sessions").exists() else []:
            kind = "track" if p.suffix == ".track" else p.name.rsplit("-", 1)[-1] if "effmon-" in p.name else None
            if kind:
                seen[kind] = _mode(p)
                if kind == "track":
                    for f in p.iterdir():
                        seen["track file"] = _mode(f)
        time.sleep(0.05)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    # (a rollback journal SQLite may make for a moment, while a connection opens the file, is private too)
    assert {k: v for k, v in seen.items() if k != "journal"} == {
        "wal": 0o600, "shm": 0o600, "track": 0o700, "track file": 0o600,
    }, seen  # fmt: skip
    assert seen.get("journal", 0o600) == 0o600, seen
    session = next((home / "sessions").glob("*.effmon"))
    assert _mode(home) == _mode(home / "sessions") == 0o700
    assert _mode(session) == 0o600
    assert not session.with_suffix(".track").exists()  # its events are in the session: the raw files went

    # an instrumented process outside effmon run: its per-user directory, made private under umask 000
    subprocess.run(
        [PY, "-c", TRAIN.replace("time.sleep(1.2)", "")], env=env, check=True, preexec_fn=lambda: os.umask(0)
    )
    base = tmp_path / "tmp" / f"effmon-{os.geteuid()}"
    assert _mode(base) == _mode(base / "track") == 0o700
    assert [_mode(f) for f in (base / "track").iterdir()] == [0o600]


def test_an_old_home_is_tightened_and_a_report_keeps_the_mode_it_had(home, phases_session, tmp_path):
    (home / "sessions").mkdir(parents=True)
    os.chmod(home / "sessions", 0o755)
    from effmon.core.paths import sessions_dir

    sessions_dir(create=True)
    assert _mode(home / "sessions") == 0o700
    shared = tmp_path / "shared.json"
    shared.write_text("old")
    os.chmod(shared, 0o644)
    res = run_effmon("report", str(phases_session), "-f", "json", "-o", str(shared))
    assert res.returncode == 0, res.stderr
    assert _mode(shared) == 0o644 and json.loads(shared.read_text())["effmon_version"]
    new = tmp_path / "new.json"
    assert run_effmon("report", str(phases_session), "-f", "json", "-o", str(new)).returncode == 0
    assert _mode(new) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- the track channel against a second local user -------------------------------------------------------------
VICTIM = """
import os, sys
import effmon.track as et
print(os.getpid(), flush=True)
sys.stdin.readline()  # the attacker plants a link to this pid's file now
with et.step(tokens=1):
    pass
et.flush()
print("refused" if et._get().refused else "written", flush=True)
"""


def _victim(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [PY, "-c", VICTIM], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, int(proc.stdout.readline())


def _as_user(uid: int | None, *argv: str) -> None:
    subprocess.run(argv, check=True, user=uid) if uid is not None else subprocess.run(argv, check=True)


@pytest.mark.parametrize("attacker", ["another user", "same user, open directory"])
def test_the_track_channel_refuses_a_directory_another_user_prepared(tmp_path, attacker):
    """A second local user creates the victim's predictable track directory first (mode 777) and links
    <pid>.jsonl to a file of the victim: the victim's et.step() refuses the directory and the file is untouched.
    As root the attacker is a real unprivileged account (uid 65534); otherwise the directory is open to all."""
    if attacker == "another user" and os.geteuid() != 0:
        pytest.skip("needs root to act as a second user")
    uid = 65534 if attacker == "another user" else None
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # like /tmp: everyone may create in it
    try:
        os.chmod(base, 0o1777)
        victim_file = tmp_path / "precious.txt"
        victim_file.write_text("the victim's data\n")
        os.chmod(tmp_path, 0o755)
        hostile = base / f"effmon-{os.geteuid()}"
        _as_user(uid, "mkdir", "-m", "777", str(hostile))
        _as_user(uid, "mkdir", "-m", "777", str(hostile / "track"))
        env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "EFFMON_TRACK_DIR")}
        env["TMPDIR"] = str(base)
        proc, pid = _victim(env)
        _as_user(uid, "ln", "-s", str(victim_file), str(hostile / "track" / f"{pid}.jsonl"))
        out, err = proc.communicate("go\n", timeout=30)
        assert out.strip() == "refused", err
        assert f"refusing to use {hostile}" in err and "this process's steps are not recorded" in err
        assert victim_file.read_text() == "the victim's data\n"
        assert sorted(p.name for p in (hostile / "track").iterdir()) == [f"{pid}.jsonl"]  # only the planted link
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_link_planted_in_the_users_own_directory_is_replaced_not_followed(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR",)}
    env["EFFMON_TRACK_DIR"] = str(tmp_path / "track")
    (tmp_path / "track").mkdir(mode=0o700)
    victim_file = tmp_path / "precious.txt"
    victim_file.write_text("keep me\n")
    proc, pid = _victim(env)
    link = tmp_path / "track" / f"{pid}.jsonl"
    link.symlink_to(victim_file)
    out, err = proc.communicate("go\n", timeout=30)
    assert out.strip() == "written", err
    assert victim_file.read_text() == "keep me\n"
    assert not link.is_symlink() and _mode(link) == 0o600 and '"train_step"' in link.read_text()


def test_track_files_of_processes_long_gone_are_removed(tmp_path):
    from effmon.track import STALE_S, remove_stale

    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    old = time.time() - STALE_S - 60
    files = {
        "dead-old": tmp_path / f"{dead.pid}.jsonl",
        "alive-old": tmp_path / f"{alive.pid}.jsonl",
        "not-ours": tmp_path / "notes.txt",
    }
    for f in files.values():
        f.write_text("{}\n")
        os.utime(f, (old, old))
    recent = tmp_path / "999999999.jsonl"  # no such pid, but written a minute ago: a monitor may still read it
    recent.write_text("{}\n")
    try:
        assert remove_stale(str(tmp_path)) == 1
    finally:
        alive.kill()
    assert not files["dead-old"].exists() and files["alive-old"].exists() and files["not-ours"].exists()
    assert recent.exists()


def test_attach_does_not_read_fake_steps_from_a_hostile_directory(tmp_path, home):
    """The monitor side: fake steps (with a terminal hyperlink) planted for the watched pid in a directory open
    to everyone are refused, and the session says so."""
    base = tmp_path / "tmp"
    base.mkdir()
    hostile = base / f"effmon-{os.geteuid()}" / "track"
    hostile.mkdir(parents=True)
    os.chmod(hostile.parent, 0o777)
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "EFFMON_TRACK_DIR")}
    env["TMPDIR"] = str(base)
    victim = subprocess.Popen([PY, "-c", "import time; time.sleep(3)"], env=env)
    fake = {
        "kind": "train_step",
        "t_start": time.time(),
        "t_end": time.time() + 1,
        "step": 1,
        "tokens": 10**9,
        "phase": "\x1b]8;;http://evil.example\x07click\x1b]8;;\x07",
    }
    (hostile / f"{victim.pid}.jsonl").write_text(json.dumps(fake) + "\n")
    res = run_effmon("record", "--pid", str(victim.pid), env_home=home, timeout=60)
    victim.wait()
    assert res.returncode == 0, res.stderr
    assert "refusing to read" in res.stderr
    with SessionReader(next((home / "sessions").glob("*.effmon"))) as r:
        assert r.rows("train_step") == []
        assert any("refusing to read" in text for _, _, text in r.notices())


# -- nothing raw reaches a terminal or a document ---------------------------------------------------------------
HOSTILE_ARGS = [
    "\x1b]8;;http://evil.example\x07click me\x1b]8;;\x07",
    "\x1b[2J\x1b[31mred",
    "<script>alert(1)</script>",
    "| a | b |",
    "[link](http://evil.example)",
    "\u202egnp.exe",
]


def test_control_characters_html_and_markdown_from_a_session_stay_literal(home, tmp_path):
    env = dict(os.environ, EFFMON_HOME=str(home))
    argv = [*ON_TRACE, "record", "--name", "hostile", "--", PY, "-c", "import time; time.sleep(1.5)", *HOSTILE_ARGS]
    subprocess.run(argv, env=env, cwd=REPO, check=True, capture_output=True)
    for args in (("sessions",), ("sessions", "show", "hostile"), ("report", "hostile"), ("sessions", "--json")):
        res = run_effmon(*args, env_home=home)
        assert res.returncode == 0, res.stderr
        assert "\x1b" not in res.stdout and "\u202e" not in res.stdout and "\x07" not in res.stdout, args
    show = run_effmon("sessions", "show", "hostile", env_home=home).stdout
    assert "\\x1b]8;;http://evil.example\\x07click" in show and "\\u202e" in show
    md, html = tmp_path / "r.md", tmp_path / "r.html"
    assert run_effmon("report", "hostile", "-f", "md", "-o", str(md), env_home=home).returncode == 0
    assert run_effmon("report", "hostile", "-f", "html", "-o", str(html), env_home=home).returncode == 0
    text = md.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "\\| a \\| b \\|" in text and "\\[link\\](http://evil.example)" in text and "\\x1b" in text
    assert "\x1b" not in text and "\u202e" not in text and "\\u202e" in text
    page = html.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "\x1b" not in page


def test_piped_session_lists_do_not_start_spreadsheet_formulas(home, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "=1+2"
    tool.write_text("#!/bin/sh\ntrue\n")
    tool.chmod(0o755)
    env = dict(os.environ, EFFMON_HOME=str(home), PATH=f"{bindir}:{os.environ['PATH']}")
    subprocess.run(
        [PY, "-m", "effmon", "record", "--name", "formula", "--", "=1+2"], env=env, check=True, capture_output=True
    )
    listed = subprocess.run([PY, "-m", "effmon", "sessions"], env=env, check=True, capture_output=True, text=True)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("formula"))
    assert "\t'=1+2" in row and "\t=1+2" not in row
    from effmon.core.fmt import csv_text

    assert csv_text("-1.5") == "-1.5" and csv_text("-") == "-" and csv_text("@SUM(A1)") == "'@SUM(A1)"


# -- safe -o writes ---------------------------------------------------------------------------------------------
def test_o_refuses_devices_directories_and_links_unless_forced(phases_session, tmp_path):
    null_before = os.stat("/dev/null")
    res = run_effmon("report", str(phases_session), "-f", "json", "-o", "/dev/null")
    assert res.returncode == 2 and "/dev/null is not a regular file" in res.stderr and "--force" in res.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and os.stat("/dev/null").st_rdev == null_before.st_rdev
    assert run_effmon("report", str(phases_session), "-f", "json", "-o", "/dev/null", "--force").returncode == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # written into, never replaced

    full = run_effmon("report", str(phases_session), "-f", "json", "-o", "/dev/full", "--force")
    assert full.returncode == 2 and "cannot write /dev/full" in full.stderr and "Traceback" not in full.stderr

    res = run_effmon("report", str(phases_session), "-o", str(tmp_path))
    assert res.returncode == 2 and "is a directory" in res.stderr

    target = tmp_path / "target.txt"
    target.write_text("untouched")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    res = run_effmon("report", str(phases_session), "-f", "json", "-o", str(link))
    assert res.returncode == 2 and "symbolic link" in res.stderr
    assert target.read_text() == "untouched" and link.is_symlink()
    for cmd in (
        ("compare", str(phases_session), str(phases_session), "-f", "json"),
        ("report", str(phases_session), "-f", "html"),
    ):
        res = run_effmon(*cmd, "-o", str(link))
        assert res.returncode == 2 and "symbolic link" in res.stderr, cmd
    assert target.read_text() == "untouched"
    res = run_effmon("report", str(phases_session), "-f", "json", "-o", str(link), "--force")
    assert res.returncode == 0 and link.is_symlink() and json.loads(target.read_text())["effmon_version"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_load_json_is_a_safe_write_too(tmp_path):
    port = free_port()
    server = _openai_server(port)
    try:
        res = run_effmon(
            "load",
            f"http://127.0.0.1:{port}",
            "--model",
            "m",
            "--requests",
            "1",
            "--json",
            "/dev/null",
            env_home=tmp_path / "h",
        )
    finally:
        server.kill()
    assert res.returncode == 2 and "not a regular file" in res.stderr
    assert not (tmp_path / "h" / "sessions").exists() or not list((tmp_path / "h" / "sessions").glob("*.effmon"))


# -- nothing listens beyond 127.0.0.1 --------------------------------------------------------------------------
def _listening(pid: int) -> set[tuple[str, int]]:
    import psutil

    found: set[tuple[str, int]] = set()
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for p in procs:
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _watch_sockets(args: list[str], env: dict[str, str]) -> tuple[int, set[tuple[str, int]], str]:
    proc = subprocess.Popen(
        [PY, "-m", "effmon", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: set[tuple[str, int]] = set()
    while proc.poll() is None:
        seen |= _listening(proc.pid)
        time.sleep(0.1)
    _, err = proc.communicate()
    return proc.returncode, seen, err


def test_every_command_listens_on_loopback_only(tmp_path):
    env = dict(os.environ, EFFMON_HOME=str(tmp_path / "h"))
    port = free_port()
    server = _openai_server(port)
    metrics, mport = _serve_metrics()
    commands = [
        ["record", "--", PY, "-c", "import time; time.sleep(1)"],
        ["demo", "--headless", "--as-fast-as-possible", "--no-live"],
        ["load", f"http://127.0.0.1:{port}", "--model", "m", "--requests", "5", "--output-tokens", "4"],
        ["attach", "--url", f"http://127.0.0.1:{mport}", "--headless", "--duration", "1.5"],
        ["record", "--prometheus", "0", "--", PY, "-c", "import time; time.sleep(1.5)"],
        ["export", "last", "--prometheus", "0", "--duration", "1.5"],
    ]
    if HAVE_TSERVE:
        commands.append(
            ["serve", "tiny-cpu", "--set", f"port={free_port()}", "--load", "--requests", "2", "--output-tokens", "4"]
        )
    listened: dict[str, set[tuple[str, int]]] = {}
    try:
        # side by side (each watched on its own; export needs the sessions the others wrote, so it runs last)
        from concurrent.futures import ThreadPoolExecutor

        first, last = [a for a in commands if a[0] != "export"], [a for a in commands if a[0] == "export"]
        for group in (first, last):
            with ThreadPoolExecutor(max_workers=len(group)) as pool:
                results = pool.map(lambda a: _watch_sockets(a, env), group)
                for args, (code, seen, err) in zip(group, results, strict=True):
                    assert code == 0, (args, err[-2000:])
                    listened[" ".join(args[:2])] = seen
    finally:
        server.kill()
        metrics.shutdown()
    if HAVE_TSERVE:
        assert listened["serve tiny-cpu"], "the launched server was never seen listening: the check saw nothing"
    assert listened["export last"] and listened["record --prometheus"], "the exporter was never seen listening"
    for command, seen in listened.items():
        assert all(ip in ("127.0.0.1", "::1") for ip, _ in seen), (command, seen)
