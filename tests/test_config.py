"""Settings: every field is a flag and an env var, bad values name the setting, keys stay secret."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vk_trio import config
from vk_trio.config import ConfigError, Settings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def test_every_setting_but_the_key_is_a_flag_with_its_env_var_and_default() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    for field in config._fields():
        if field.name == "vast_api_key":
            assert "--vast-api-key " not in help_text  # a flag would show in `ps`
            continue
        # POD_NAMESPACE and POD_NAME are the downward API's names; a bool flag stands alone.
        value = f"[{field.env}]" if field.kind is bool else field.env
        assert f"--{field.name.replace('_', '-')} {value}" in help_text
    assert set(Settings.__struct_fields__) == {field.name for field in config._fields()}


def test_env_then_flags_override_defaults() -> None:
    environ = {"NODE_NAME": "from-env", "POLL_FAST": "0.5", "MAX_HOURLY_SPEND": "3.5"}
    settings = config.load(parse("--poll-fast", "0.25"), environ)
    assert settings.node_name == "from-env"
    assert settings.poll_fast == 0.25
    assert settings.max_hourly_spend == 3.5
    assert settings.max_instances is None
    assert config.load(None, {}).startup_timeout == 900.0


def test_a_malformed_value_names_the_env_var() -> None:
    with pytest.raises(ConfigError, match="POLL_SLOW"):
        config.load(None, {"POLL_SLOW": "fast"})


@pytest.mark.parametrize(
    ("rust_log", "level"),
    [("debug", "DEBUG"), ("vk_trio=debug,hyper=info", "DEBUG"), ("warn", "WARNING"), ("x", "INFO")],
)
def test_rust_log_from_the_seed_readme_sets_the_level(rust_log: str, level: str) -> None:
    assert config.load(None, {"RUST_LOG": rust_log}).log_level == level
    assert config.load(None, {"RUST_LOG": rust_log, "LOG_LEVEL": "ERROR"}).log_level == "ERROR"


def test_the_key_can_come_from_a_file_and_never_shows_in_repr(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("secret-key-from-file\n")
    settings = config.load(None, {"VAST_API_KEY_FILE": str(key_file)})
    assert settings.vast_api_key == "secret-key-from-file"
    assert "secret-key-from-file" not in repr(settings)
    env_wins = config.load(None, {"VAST_API_KEY_FILE": str(key_file), "VAST_API_KEY": "k-env"})
    assert env_wins.vast_api_key == "k-env"


@pytest.mark.parametrize("content", [None, ""])
def test_an_unreadable_or_empty_key_file_is_a_clear_error(
    tmp_path: Path, content: str | None
) -> None:
    key_file = tmp_path / "api-key"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(ConfigError, match="VAST_API_KEY_FILE"):
        config.load(None, {"VAST_API_KEY_FILE": str(key_file)})


def test_the_readme_documents_every_setting_as_the_table_says() -> None:
    """Each row: env var, flag, default, what is allowed and the description, from Settings."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    wrong = []
    for field in config._fields():
        flag = "(env only)" if field.name in config._HIDDEN_FROM_FLAGS else f"`{field.flag}`"
        default = "unset" if field.default is None else f"`{field.default}`"
        if field.name == "vast_api_key":
            default = "required"
        row = f"| `{field.env}` | {flag} | {default} | {field.allowed()} | {field.description} |"
        if row not in readme:
            wrong.append(row)
    assert wrong == []


@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("warn", "WARNING"),
        ("Warning", "WARNING"),
        ("err", "ERROR"),
        ("FATAL", "CRITICAL"),
        ("trace", "TRACE"),
        ("debug", "DEBUG"),
        ("info", "INFO"),
    ],
)
def test_log_levels_accept_the_usual_aliases_in_any_case(given: str, level: str) -> None:
    assert config.load(None, {"LOG_LEVEL": given}).log_level == level


def test_values_at_the_edges_of_their_ranges_are_accepted() -> None:
    edges = {
        "HEALTH_PORT": "65535",
        "KUBELET_PORT": "1",
        "LEASE_SECONDS": "10",
        "MAX_HOURLY_SPEND": "0",
        "MAX_INSTANCES": "0",
        "PACING": "0",
        "VAST_ATTEMPTS": "1",
        "BACKOFF_FIRST": "0.5",
        "BACKOFF_CAP": "0.5",
        "POLL_FAST": "0.1",
        "POLL_SLOW": "0.1",
    }
    settings = config.load(None, edges)
    assert (settings.health_port, settings.lease_seconds, settings.max_hourly_spend) == (
        65535,
        10,
        0.0,
    )
    with pytest.raises(ConfigError, match="LEASE_SECONDS"):
        config.load(None, {**edges, "LEASE_SECONDS": "121"})


def test_help_shows_each_range_from_the_table() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert "(1-65535; default: 10255)" in help_text
    assert "(> 0; default: 2.0)" in help_text
    assert "(10-120; default: 40)" in help_text
    assert "(>= 0; default: unset)" in help_text


def test_leader_election_reads_the_downward_api_names_and_a_bare_flag() -> None:
    environ = {"POD_NAMESPACE": "vk", "POD_NAME": "vk-7d9f-abcde"}
    settings = config.load(parse("--leader-elect"), environ)
    assert settings.leader_elect is True
    assert settings.leader_elect_namespace == "vk"
    assert settings.leader_elect_identity == "vk-7d9f-abcde"
    assert config.load(None, {"LEADER_ELECT": "true"}).leader_elect is True
    assert (
        config.load(parse("--leader-elect=false"), {"LEADER_ELECT": "true"}).leader_elect is False
    )
    assert config.load(None, {}).leader_elect is False  # `vk-trio run` alone: one process


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"LEADER_ELECT_RENEW_DEADLINE": "15"}, "LEADER_ELECT_RENEW_DEADLINE"),
        ({"LEADER_ELECT_RETRY_PERIOD": "9"}, "LEADER_ELECT_RETRY_PERIOD"),
        # A standby would take over after the node Lease ran out: the node would go NotReady.
        ({"LEADER_ELECT_LEASE_DURATION": "30"}, "LEADER_ELECT_LEASE_DURATION"),
        ({"LEASE_SECONDS": "20"}, "LEADER_ELECT_LEASE_DURATION"),
    ],
)
def test_election_timings_that_cannot_fence_or_take_over_in_time_are_refused(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        config.load(None, {"LEADER_ELECT": "true", **environ})
    config.load(None, environ)  # without election these do not matter


def test_node_labels_and_taints_are_parsed_and_checked() -> None:
    settings = config.load(
        None,
        {
            "NODE_LABELS": "vast.ai/region=eu,tier=",
            "NODE_TAINTS": "tier=spot:NoSchedule,x:NoExecute",
        },
    )
    assert config.parse_labels(settings.node_labels) == {"vast.ai/region": "eu", "tier": ""}
    assert config.parse_taints(settings.node_taints) == [
        ("tier", "spot", "NoSchedule"),
        ("x", "", "NoExecute"),
    ]
    for bad in ({"NODE_LABELS": "region"}, {"NODE_TAINTS": "tier=spot:Sometimes"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            config.load(None, bad)


def test_the_credit_warning_comes_at_or_before_buying_stops() -> None:
    settings = config.load(None, {"CREDIT_STOP_HOURS": "0", "CREDIT_WARN_HOURS": "0"})
    assert (settings.credit_stop_hours, settings.credit_warn_hours) == (0.0, 0.0)
    assert config.load(None, {}).credit_stop_hours == 1.0
    with pytest.raises(ConfigError, match=r"CREDIT_WARN_HOURS.*below CREDIT_STOP_HOURS"):
        config.load(None, {"CREDIT_STOP_HOURS": "8"})
    with pytest.raises(ConfigError, match="CREDIT_STOP_HOURS"):
        config.load(None, {"CREDIT_STOP_HOURS": "-1"})
