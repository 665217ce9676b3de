"""Errors Hydra raises before a job runs become nnrun's located errors (exit 2 or 10)."""

from __future__ import annotations

from hydra.errors import MissingConfigException, OverrideParseException

from nnrun.cli import _command_line_error
from nnrun.pipeline import check_run_settings


def test_unknown_experiment_is_a_config_error_with_a_suggestion():
    err = _command_line_error(MissingConfigException("x", "experiment/patchng", ["a"]))
    assert err.exit_code == 10
    assert err.issues[0].code == "unknown_experiment"
    assert "did you mean `patching`?" in err.issues[0].hint


def test_experiment_given_as_a_path_explains_names():
    err = _command_line_error(MissingConfigException("x", "experiment/work/x/my_exp.yaml"))
    assert err.exit_code == 10
    assert "nnrun experiment=my_exp" in err.issues[0].hint
    assert "NNRUN_EXPERIMENTS=work/x" in err.issues[0].hint


def test_unknown_group_option_exits_2():
    err = _command_line_error(MissingConfigException("x", "model/gpt3", ["gpt2", "demo"]))
    assert (err.exit_code, err.issues[0].code, err.issues[0].path) == (2, "unknown_option", "model")
    assert "did you mean `gpt2`?" in err.issues[0].hint


def test_unparsable_override_exits_2():
    err = _command_line_error(OverrideParseException("foo", "Error parsing override 'foo'"))
    assert (err.exit_code, err.issues[0].code) == (2, "bad_override")
    assert "`foo`" in err.issues[0].message


def test_other_exceptions_are_bugs():
    assert _command_line_error(KeyError("x")) is None


def test_seed_must_be_an_integer():
    import pytest

    from nnrun.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        check_run_settings({"seed": "abc"})
    assert info.value.issues[0].code == "invalid_seed"
    check_run_settings({"seed": 3})


def test_overriding_a_key_the_config_lacks_says_how_to_add_it():
    from hydra.errors import ConfigCompositionException

    err = _command_line_error(ConfigCompositionException("Could not override 'data.limit'."))
    assert (err.exit_code, err.issues[0].code) == (2, "hydra_error")
    assert "+data.limit=" in err.issues[0].hint
