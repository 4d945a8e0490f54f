"""The ticket server's configuration: flags win over the environment, which wins over the defaults, and
every bad value stops the server before it starts, with one clear line on stderr and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from procs import ROOT

if str(ROOT) not in sys.path:  # plain `pytest tests/` puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from database import DEFAULT_HOLD_SECONDS, DEFAULT_MAX_PER_ORDER
from service.config import ConfigError, ServerConfig, parse_config


def run_server(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("BILHETERIA_")} | (env or {})
    return subprocess.run(
        [sys.executable, "server.py", "--db", str(tmp_path / "t.db"), *args],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=30, env=environment,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--port", "99999"], {}, "--port (or BILHETERIA_PORT): 99999 is not a port (0 to 65535, 0 for a free one)"),
        (["--port", "-1"], {}, "--port (or BILHETERIA_PORT): -1 is not a port"),
        ([], {"BILHETERIA_PORT": "abc"}, "--port (or BILHETERIA_PORT): 'abc' is not a whole number"),
        (["--max-per-order", "0"], {}, "--max-per-order (or BILHETERIA_MAX_PER_ORDER): 0 would refuse every sale"),
        (["--hold-seconds", "0"], {}, "--hold-seconds (or BILHETERIA_HOLD_SECONDS): 0 is not a positive number of seconds"),
        ([], {"BILHETERIA_HOLD_SECONDS": "soon"}, "--hold-seconds (or BILHETERIA_HOLD_SECONDS): 'soon' is not a number of seconds"),
        (["--offer-seconds", "-5"], {}, "--offer-seconds (or BILHETERIA_OFFER_SECONDS): -5 is not a positive number of seconds"),
        (["--log-level", "LOUD"], {}, "--log-level (or BILHETERIA_LOG_LEVEL): 'LOUD' is not a log level"),
        (["--name-server", "nowhere"], {}, "--name-server (or BILHETERIA_NAME_SERVERS): 'nowhere' is not HOST:PORT"),
        ([], {"BILHETERIA_NAME_SERVERS": "127.0.0.1:1,bad"}, "--name-server (or BILHETERIA_NAME_SERVERS): 'bad' is not HOST:PORT"),
        (["--certfile", "cert.pem"], {}, "--certfile and --keyfile go together"),
        (["--smtp-port", "0"], {}, "--smtp-port: 0 is not a port number"),
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        (["--registration-key-file", "/nonexistent/key"], {}, "the registration key file /nonexistent/key cannot be read"),
        ([], {"BILHETERIA_REGISTRATION_KEY": "short"}, "is 5 characters; it needs at least 32"),
        (["--host", "no.such.host.invalid"], {}, "--host (or BILHETERIA_HOST): 'no.such.host.invalid' is not an address to listen on"),
        (["--db", ""], {}, "--db (or BILHETERIA_DB): empty; name a SQLite file or a postgresql:// URL"),
        (["--admin-token", " "], {}, "--admin-token (or BILHETERIA_ADMIN_TOKEN): empty; leave it out"),
        ([], {"BILHETERIA_ADMIN_TOKEN": ""}, "--admin-token (or BILHETERIA_ADMIN_TOKEN): empty"),
        (["--mail-from", "nobody"], {}, "--mail-from (or BILHETERIA_MAIL_FROM): 'nobody' is not an email address"),
        (["--max-connections", "0"], {}, "--max-connections (or BILHETERIA_MAX_CONNECTIONS): 0 would refuse every client"),
        ([], {"BILHETERIA_IDLE_SECONDS": "0"}, "--idle-seconds (or BILHETERIA_IDLE_SECONDS): 0 is not a positive number of seconds"),
        (["--throttle-scale", "inf"], {}, "--throttle-scale (or BILHETERIA_THROTTLE_SCALE): inf is not a positive factor"),
    ],
)
def test_a_bad_value_exits_2_with_one_clear_line(args: list[str], env: dict[str, str], expected: str, tmp_path: Path) -> None:
    done = run_server(args, tmp_path, env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("server.py: ") and expected in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "t.db").exists(), "nothing starts on a bad value"


def test_without_flags_or_environment_the_defaults_hold() -> None:
    assert parse_config([], {}) == ServerConfig()
    config = ServerConfig()
    assert (config.host, config.port, config.db) == ("127.0.0.1", 18861, "tickets.db")
    assert config.name_servers == (("127.0.0.1", 18811),)
    assert (config.hold_seconds, config.max_per_order, config.seed_demo) == (DEFAULT_HOLD_SECONDS, DEFAULT_MAX_PER_ORDER, True)


def test_the_environment_is_read_when_no_flag_is_given() -> None:
    config = parse_config([], {
        "BILHETERIA_PORT": "0", "BILHETERIA_HOLD_SECONDS": "30", "BILHETERIA_MAX_PER_ORDER": "4", "BILHETERIA_NO_DEMO": "1",
        "BILHETERIA_NAME_SERVERS": "a:1, b:2", "BILHETERIA_LOG_LEVEL": "debug", "BILHETERIA_ADMIN_TOKEN": "secret",
    })
    assert (config.port, config.hold_seconds, config.max_per_order, config.seed_demo) == (0, 30.0, 4, False)
    assert config.name_servers == (("a", 1), ("b", 2))
    assert config.log_level == "DEBUG" and config.admin_token == "secret"


def test_a_flag_wins_over_the_environment() -> None:
    environ = {"BILHETERIA_PORT": "abc", "BILHETERIA_HOLD_SECONDS": "0", "BILHETERIA_NAME_SERVERS": "bad"}
    config = parse_config(["--port", "7000", "--hold-seconds", "5", "--name-server", "x:1,y:2", "--name-server", "z:3"], environ)
    assert (config.port, config.hold_seconds) == (7000, 5.0)
    assert config.name_servers == (("x", 1), ("y", 2), ("z", 3))


def test_an_empty_name_server_list_means_none() -> None:
    assert parse_config([], {"BILHETERIA_NAME_SERVERS": ""}).name_servers == ()


def test_the_admin_token_stays_out_of_the_repr() -> None:
    assert "hunter2" not in repr(parse_config(["--admin-token", "hunter2"], {}))


def test_a_config_error_names_the_flag_and_its_variable() -> None:
    with pytest.raises(ConfigError, match=r"^--max-per-order \(or BILHETERIA_MAX_PER_ORDER\): -3 would refuse every sale"):
        parse_config([], {"BILHETERIA_MAX_PER_ORDER": "-3"})


@pytest.mark.parametrize("db", ["missing-directory/t.db", "not-a-database.db"])
def test_a_database_that_cannot_be_opened_stops_the_server_with_one_line(db: str, tmp_path: Path) -> None:
    (tmp_path / "not-a-database.db").write_bytes(b"this is not SQLite" * 100)
    path = tmp_path / db
    environment = {name: value for name, value in os.environ.items() if not name.startswith("BILHETERIA_")}
    done = subprocess.run(
        [sys.executable, "server.py", "--db", str(path), "--port", "0"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=30, env=environment,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot open the database {path}" in done.stderr
    assert "Traceback" not in done.stderr
