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
