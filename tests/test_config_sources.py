"""The settings sources: EDGEFACE_ environment overrides over the TOML file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from edgeface.config import Settings, load_settings
from edgeface.config_sources import deep_merge
from edgeface.errors import ConfigError


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "edgeface.toml"
    path.write_text(
        '[mqtt]\nport = 1884\nusername = "door"\n[decision]\nmatch_threshold = 0.8\nvotes = 5\n', encoding="utf-8"
    )
    return path


def test_environment_sets_nested_keys_and_beats_the_file_key_by_key(config_file: Path) -> None:
    settings = load_settings(
        config_file,
        environ={
            "EDGEFACE_MQTT__PORT": "1999",
            "EDGEFACE_MQTT__TLS__INSECURE": "true",
            "EDGEFACE_DECISION__MATCH_THRESHOLD": "0.9",
            "EDGEFACE_MQTT__PASSWORD": "s3cret",
            "EDGEFACE_SOURCE__LOOP": "no",
        },
    )
    assert settings.mqtt.port == 1999 and settings.mqtt.username == "door"  # the file's other keys stay
    assert settings.mqtt.tls is not None and settings.mqtt.tls.insecure and settings.mqtt.tls.ca_file is None
    assert settings.decision.match_threshold == 0.9 and settings.decision.votes == 5
    assert settings.mqtt.password == SecretStr("s3cret")
    assert settings.source.loop is False
    assert load_settings(config_file, environ={}).mqtt.port == 1884


def test_keyword_overrides_are_beaten_by_the_environment_too(config_file: Path) -> None:
    env = {"EDGEFACE_MQTT__HOST": "broker.lan"}
    settings = load_settings(config_file, environ=env, mqtt={"host": "kwarg.lan", "keepalive_s": 60})
    assert (settings.mqtt.host, settings.mqtt.keepalive_s, settings.mqtt.port) == ("broker.lan", 60, 1884)


@pytest.mark.parametrize("name", ["EDGEFACE_MQTT__HOST", "edgeface_mqtt__host", "Edgeface_Mqtt__Host"])
def test_variable_names_are_case_insensitive(name: str) -> None:
    assert load_settings(environ={name: "broker.lan"}).mqtt.host == "broker.lan"


def test_tables_lists_and_json_only_scalars_take_json() -> None:
    settings = load_settings(
        environ={
            "EDGEFACE_LIVENESS__PASSIVE_MODELS": '["minifasnet_v2_2p7_float32"]',
            "EDGEFACE_MQTT__TLS": '{"ca_file": "/etc/ssl/ca.pem"}',
            "EDGEFACE_MQTT__TLS__INSECURE": "true",  # refines the JSON table
            "EDGEFACE_MQTT__QOS": "2",  # Literal[0, 1, 2]: the text "2" is none of them, its JSON value is
            "EDGEFACE_DECISION__MARGIN": "null",  # back to the manifest default
            "EDGEFACE_DEVICE__ID": "123",  # a string field keeps the text
        }
    )
    assert settings.liveness.passive_models == ("minifasnet_v2_2p7_float32",)
    assert settings.mqtt.tls is not None
    assert (str(settings.mqtt.tls.ca_file), settings.mqtt.tls.insecure) == ("/etc/ssl/ca.pem", True)
    assert settings.mqtt.qos == 2 and settings.decision.margin is None and settings.device.id == "123"


def test_a_whole_section_as_json_merges_into_the_file(config_file: Path) -> None:
    settings = load_settings(config_file, environ={"EDGEFACE_MQTT": '{"host": "broker.lan"}'})
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.username) == ("broker.lan", 1884, "door")


def test_unknown_keys_are_errors_naming_every_variable() -> None:
    env = {
        "EDGEFACE_MQTT__HOSTT": "x",
        "EDGEFACE_MQT__HOST": "y",
        "EDGEFACE_MQTT__PORT__X": "1",
        "EDGEFACE_MQTT__": "z",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    lines = str(caught.value).splitlines()
    assert len(lines) == 4, lines
    assert any(line.startswith("EDGEFACE_MQTT__HOSTT: mqtt has no key 'hostt'") for line in lines), lines
    assert any(line.startswith("EDGEFACE_MQT__HOST: no settings section 'mqt'") for line in lines), lines
    assert any(line.startswith("EDGEFACE_MQTT__PORT__X: mqtt.port is not a table") for line in lines), lines
    assert any(line.startswith("EDGEFACE_MQTT__: mqtt has no key ''") for line in lines), lines


def test_bad_values_name_their_variable_and_key_path(config_file: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file, environ={"EDGEFACE_MQTT__QOS": "3", "EDGEFACE_DECISION__VOTES": "0"})
    message = str(caught.value)
    assert "EDGEFACE_MQTT__QOS: mqtt.qos: Input should be 0, 1 or 2 (got '3')" in message
    assert "EDGEFACE_DECISION__VOTES: decision.votes:" in message
    with pytest.raises(ConfigError, match=r"EDGEFACE_MQTT__TLS: mqtt.tls takes a JSON value"):
        load_settings(environ={"EDGEFACE_MQTT__TLS": "insecure"})
    with pytest.raises(ConfigError, match=rf"^{config_file}: mqtt.port:"):  # the file's own mistakes name the file
        load_settings(config_file, environ={"EDGEFACE_MQTT__HOST": "broker.lan"}, mqtt={"port": 0})


def test_other_edgeface_variables_are_not_settings() -> None:
    env = {
        "EDGEFACE_COMMAND_KEYS": '{"k": "0123456789abcdef"}',
        "EDGEFACE_SAMPLES_DIR": "/opt/edgeface/samples",
        "EDGEFACE_CONFIG": "/etc/edgeface/edgeface.toml",
        "EDGEFACE_FAULT_RESTARTS": "3",
        "EDGEFACE_MQTT_HOST": "a single underscore is not a level",
    }
    assert load_settings(environ=env) == Settings()


def test_config_check_reads_the_process_environment(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeface.cli import main

    monkeypatch.setenv("EDGEFACE_MQTT__HOSTT", "broker.lan")
    assert main(["config", "check", str(config_file)]) == 2
    assert "EDGEFACE_MQTT__HOSTT: mqtt has no key 'hostt'" in capsys.readouterr().out
    monkeypatch.delenv("EDGEFACE_MQTT__HOSTT")
    monkeypatch.setenv("EDGEFACE_MQTT__HOST", "broker.lan")
    assert load_settings(config_file).mqtt.host == "broker.lan"


def test_deep_merge_merges_tables_and_replaces_everything_else() -> None:
    base = {"mqtt": {"port": 1884, "tls": {"ca_file": "/ca"}}, "device": {"id": "a"}}
    merged = deep_merge(base, {"mqtt": {"tls": {"insecure": True}, "port": 1999}, "device": None})
    assert merged == {"mqtt": {"port": 1999, "tls": {"ca_file": "/ca", "insecure": True}}, "device": None}
    assert base["mqtt"] == {"port": 1884, "tls": {"ca_file": "/ca"}}  # inputs are left alone


def test_loading_settings_imports_no_settings_framework() -> None:
    # pydantic-settings pulled in dotenv, http, urllib.request and more: ~9 MB resident for one feature.
    code = (
        "import sys; from edgeface.config import load_settings; load_settings(environ={'EDGEFACE_MQTT__PORT': '1'});"
        "print(sorted(m for m in ('pydantic_settings', 'dotenv', 'http') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
