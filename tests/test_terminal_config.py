"""The terminal's settings come one way: flags first, then the environment, then defaults; a bad value in the
environment is named in one line. Pure: no process, no network."""

from __future__ import annotations

import pytest

from terminal.config import DEFAULT_NAME_SERVER, ConfigError, TerminalConfig, terminal_config

NO_FLAGS = {"name_servers": None, "servers": None, "cafile": None, "timeout": 5.0, "json": False, "token": None}


def test_without_flags_or_environment_the_defaults_serve_one_laptop() -> None:
    assert terminal_config(**NO_FLAGS, environ={}) == TerminalConfig(name_servers=(DEFAULT_NAME_SERVER,), servers=(), cafile=None)


def test_the_environment_fills_what_no_flag_gave() -> None:
    environ = {"BILHETERIA_NAME_SERVERS": "10.0.0.1:18811, 10.0.0.2:18811", "BILHETERIA_SERVERS": "10.0.0.3:18861",
               "BILHETERIA_CAFILE": "ca.pem", "BILHETERIA_ADMIN_TOKEN": "from-env"}
    config = terminal_config(**NO_FLAGS, environ=environ)
    assert config.name_servers == ("10.0.0.1:18811", "10.0.0.2:18811")
    assert (config.servers, config.cafile, config.token) == (("10.0.0.3:18861",), "ca.pem", "from-env")


def test_a_flag_beats_the_environment() -> None:
    environ = {"BILHETERIA_NAME_SERVERS": "10.0.0.1:18811", "BILHETERIA_CAFILE": "env.pem", "BILHETERIA_ADMIN_TOKEN": "from-env"}
    flags = {**NO_FLAGS, "name_servers": ["127.0.0.1:1"], "cafile": "flag.pem", "token": "from-flag"}
    config = terminal_config(**flags, environ=environ)
    assert (config.name_servers, config.cafile, config.token) == (("127.0.0.1:1",), "flag.pem", "from-flag")


def test_a_bad_address_in_the_environment_is_named_in_one_line() -> None:
    with pytest.raises(ConfigError) as refused:
        terminal_config(**NO_FLAGS, environ={"BILHETERIA_SERVERS": "127.0.0.1:18861,nonsense"})
    message = str(refused.value)
    assert message.startswith("BILHETERIA_SERVERS: ") and "nonsense" in message and "\n" not in message


def test_the_config_is_frozen() -> None:
    config = terminal_config(**NO_FLAGS, environ={})
    with pytest.raises(AttributeError):
        config.timeout = 1.0  # type: ignore[misc]
