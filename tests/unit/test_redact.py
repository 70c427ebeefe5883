from effmon.core.redact import REDACTED, redact_argv, redact_env


def test_arguments_with_secrets_are_redacted():
    argv = [
        "vllm",
        "serve",
        "m",
        "--api-key",
        "abc123",
        "--hf-token=hf_abcdefghijklmnopqrstuvwxyz",
        "--lr",
        "1e-4",
        "HF_TOKEN=xyz",
        "--url",
        "https://user:pw@example.com/x",
        "sk-abcdefghijklmnopqrstu",
    ]
    out = redact_argv(argv)
    assert out[3:5] == ["--api-key", REDACTED]
    assert out[5] == f"--hf-token={REDACTED}"
    assert out[6:8] == ["--lr", "1e-4"]
    assert out[8] == f"HF_TOKEN={REDACTED}"
    assert "pw" not in out[10] and "example.com/x" in out[10]
    assert out[11] == REDACTED
    assert "abc123" not in " ".join(out)


def test_environment_keeps_relevant_names_and_hides_secrets():
    env = {
        "HF_TOKEN": "hf_" + "a" * 30,
        "CUDA_VISIBLE_DEVICES": "0,1",
        "WANDB_API_KEY": "k" * 40,
        "HOME": "/root",
        "RANK": "0",
        "HF_HOME": "/data/hf",
    }
    out = redact_env(env)
    assert out == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HF_HOME": "/data/hf",
        "HF_TOKEN": REDACTED,
        "RANK": "0",
        "WANDB_API_KEY": REDACTED,
    }


def test_a_command_log_closes_its_pipe_once_and_never_a_descriptor_reused_since(tmp_path):
    """`started()` closes effmon's end of the pipe; `close()` later must not close that number again: by then it
    can be another file's (it was the session database's, and a live dashboard read "disk I/O error")."""
    import os

    from effmon.core.logpipe import RedactedLog

    log = RedactedLog(tmp_path / "job.log")
    number = log.fd
    os.write(log.fd, b"token=hunter2-secret-value\n")
    log.started()
    other = os.open(tmp_path / "other", os.O_CREAT | os.O_RDWR, 0o600)  # the lowest free number: the pipe's
    try:
        assert other == number
        log.close()
        os.fstat(other)  # still open
    finally:
        os.close(other)
    assert (tmp_path / "job.log").read_text().endswith("\n")
