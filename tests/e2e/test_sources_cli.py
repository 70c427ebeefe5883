"""The plugin API, and the NVML source's logic on a stand-in driver (no GPU on CI)."""


def test_unknown_source_name_is_a_clear_error(home):
    from tests.conftest import run_effmon

    res = run_effmon("record", "--source", "nope", "--", "true", env_home=home)
    assert res.returncode == 2 and "unknown source(s): nope" in res.stderr
