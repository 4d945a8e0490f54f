"""Throwaway credentials for a box office on one machine: a CA, a certificate it signed, a registration key.

The demo's secure default (TLS on every hop, signed registrations) needs all three, and a newcomer has none, so
this makes them in the demo's data folder with the openssl command line (already on any machine with Python's
ssl module's OpenSSL, and no new package). The CA's key lives only as long as the files do: a terminal trusts
this CA only when given its certificate (`--cafile`), so nothing here is trusted anywhere else. For a real
deployment the operator's own CA signs each host's certificate (docs/reliability/identity.md says how).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from net.tls import TLSFiles
from tools.harness import LaunchError

VALID_DAYS = 30
"""A demo's certificates outlive any demo run, and expire soon enough that a forgotten data folder is harmless."""
SAN = "subjectAltName=IP:127.0.0.1,DNS:localhost"
"""Every process of a local cluster listens on 127.0.0.1 and terminals dial it (or localhost) by that name."""
KEY_BYTES = 32
"""256 random bits, written as 64 hex characters: twice the shortest key the programs accept."""
OPENSSL_SECONDS = 30.0


class PkiUnavailable(LaunchError):
    """The credentials could not be made (no openssl, or it failed); the message says what to do instead."""


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise PkiUnavailable("the secure demo makes its certificates with the openssl command, which is not installed; "
                             "install openssl, or run the open setup with --insecure")
    try:
        subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=OPENSSL_SECONDS)
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:] or ["no message"]
        raise PkiUnavailable(f"openssl {args[0]} failed in {cwd}: {last[0]}") from None
    except subprocess.TimeoutExpired:
        raise PkiUnavailable(f"openssl {args[0]} did not finish within {OPENSSL_SECONDS:.0f} s") from None


def make_local_pki(directory: Path) -> TLSFiles:
    """A new CA (ca.pem) and a certificate it signed for 127.0.0.1 and localhost (server.pem, server.key) in
    `directory`, replacing any made before; the private keys are readable by their owner only."""
    directory.mkdir(parents=True, exist_ok=True)
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *curve, "-days", str(VALID_DAYS), "-subj", "/CN=bilheteria demo CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=directory)
    _openssl("req", *curve, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr", cwd=directory)
    (directory / "san.cnf").write_text(SAN + "\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", str(VALID_DAYS), "-extfile", "san.cnf", "-out", "server.pem", cwd=directory)
    for key in ("ca.key", "server.key"):
        (directory / key).chmod(0o600)
    return TLSFiles(str(directory / "server.pem"), str(directory / "server.key"), str(directory / "ca.pem"))


def make_registration_key(path: Path) -> Path:
    """A new random registration key in `path` (owner-only from the moment it exists), replacing any before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    return path
