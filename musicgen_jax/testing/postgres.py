"""A throwaway PostgreSQL server for tests and benchmarks (``benchmarks/load_test.py --replicas``):
``initdb`` in a temporary directory, ``postgres`` on a free port of 127.0.0.1, trust
authentication, no fsync; stopped and deleted afterwards.

PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` system user (its
directory is made theirs). Tests skip when the binaries, or psycopg, are missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

USER = "musicgen"


def _binaries() -> dict[str, str] | None:
    found = {name: shutil.which(name) for name in ("initdb", "pg_ctl", "postgres")}
    if all(found.values()):
        return found
    for bin_dir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):  # Debian's layout
        if all((bin_dir / name).exists() for name in found):
            return {name: str(bin_dir / name) for name in found}
    return None


def unavailable() -> str | None:
    """Why a server cannot be started here (None when it can)."""
    if _binaries() is None:
        return "PostgreSQL is not installed (initdb, pg_ctl, postgres)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return 'psycopg is not installed: pip install "psycopg[binary]"'
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One server; :meth:`new_database` gives each test a database of its own."""

    def __init__(self) -> None:
        self.binaries = _binaries()
        self.root = Path(tempfile.mkdtemp(prefix="musicgen-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as_user, *command], capture_output=True, text=True, timeout=120, cwd=self.root
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {result.stderr or result.stdout}\n{tail}")

    def start(self) -> None:
        self._run(
            self.binaries["initdb"],
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            USER,
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            self.binaries["pg_ctl"], "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self.binaries["pg_ctl"], "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)
