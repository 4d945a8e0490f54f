"""The name server's configuration: flags, then BILHETERIA_NS_*, then defaults; a bad value is one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from procs import ROOT

if str(ROOT) not in sys.path:  # plain `pytest tests/` puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from name_server import DEFAULT_PORT, DEFAULT_TTL, NameServerConfig


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--port", "99999"], {}, "--port (or BILHETERIA_NS_PORT): port must be 0..65535, got 99999"),
        ([], {"BILHETERIA_NS_PORT": "abc"}, "--port (or BILHETERIA_NS_PORT): 'abc' is not a whole number"),
        (["--ttl", "0"], {}, "--ttl (or BILHETERIA_NS_TTL): ttl must be a positive number of seconds, got 0"),
        ([], {"BILHETERIA_NS_TTL": "long"}, "--ttl (or BILHETERIA_NS_TTL): 'long' is not a number of seconds"),
        (["--keyfile", "key.pem"], {}, "--certfile and --keyfile go together"),
        (["--verbose"], {}, "unrecognized arguments: --verbose"),
        (["--host", "nosuchhost.invalid", "--insecure-open-registration"], {},
         "--host (or BILHETERIA_NS_HOST): 'nosuchhost.invalid' is not an address to listen on"),
        ([], {}, "registrations need the key shared with the ticket servers: --registration-key-file FILE"),
        (["--registration-key-file", "/nonexistent/key"], {}, "the registration key file /nonexistent/key cannot be read"),
        ([], {"BILHETERIA_REGISTRATION_KEY": "short"}, "is 5 characters; it needs at least 32"),
        (["--insecure-open-registration"], {"BILHETERIA_REGISTRATION_KEY": "k" * 32}, "contradicts the registration key"),
    ],
)
def test_a_bad_value_exits_2_with_one_clear_line(args: list[str], env: dict[str, str], expected: str) -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("BILHETERIA_")} | env
    done = subprocess.run([sys.executable, "name_server.py", *args], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env=environment)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("name_server.py: ") and expected in lines[0], done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr


OPEN = {"BILHETERIA_NS_INSECURE_OPEN_REGISTRATION": "1"}


def test_flags_win_over_the_environment_which_wins_over_the_defaults() -> None:
    assert NameServerConfig.parse(["--insecure-open-registration"], {}) == NameServerConfig(insecure_open_registration=True)
    assert (NameServerConfig().port, NameServerConfig().ttl) == (DEFAULT_PORT, DEFAULT_TTL)
    from_env = NameServerConfig.parse([], {"BILHETERIA_NS_PORT": "0", "BILHETERIA_NS_TTL": "1.5", "BILHETERIA_NS_HOST": "::1", **OPEN})
    assert (from_env.host, from_env.port, from_env.ttl, from_env.insecure_open_registration) == ("::1", 0, 1.5, True)
    flagged = NameServerConfig.parse(["--port", "7", "--ttl", "3"], {"BILHETERIA_NS_PORT": "abc", "BILHETERIA_NS_TTL": "0", **OPEN})
    assert (flagged.port, flagged.ttl) == (7, 3.0)


def test_the_registration_key_comes_from_a_file_or_the_environment_never_shown(tmp_path) -> None:
    key_file = tmp_path / "registration.key"
    key_file.write_text("f" * 40 + "\n")
    from_file = NameServerConfig.parse(["--registration-key-file", str(key_file)], {"BILHETERIA_REGISTRATION_KEY": "e" * 40})
    assert from_file.key is not None and from_file.key.secret == b"f" * 40 and not from_file.insecure_open_registration
    from_variable = NameServerConfig.parse([], {"BILHETERIA_REGISTRATION_KEY": "e" * 40})
    assert from_variable.key is not None and from_variable.key.secret == b"e" * 40
    assert NameServerConfig.parse([], {"BILHETERIA_REGISTRATION_KEY_FILE": str(key_file)}).key == from_file.key
    assert "f" * 40 not in repr(from_file) and "e" * 40 not in repr(from_variable)


def test_an_empty_variable_counts_as_unset() -> None:
    assert NameServerConfig.parse([], {"BILHETERIA_NS_PORT": "", **OPEN}).port == DEFAULT_PORT
    assert NameServerConfig.parse([], {"BILHETERIA_REGISTRATION_KEY": "", **OPEN}).key is None
