"""A real PostgreSQL server for tests: a fresh cluster in a temp directory on a free port
on 127.0.0.1, run as the `postgres` system user when the tests run as root (initdb
refuses root), stopped at teardown. `PostgresServer.find()` says why it cannot run."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path, user: str | None):
        self.bindir, self.user = bindir, user  # user: run the binaries as this one
        self.root = Path(tempfile.mkdtemp(prefix="edgefl-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._names = itertools.count()

    @staticmethod
    def find() -> tuple[Path | None, str | None, str]:
        """(bindir, user to run as, reason it cannot run or "")."""
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return None, None, "psycopg is not installed (pip install -e '.[postgres]')"
        found = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"),
            key=lambda p: int(Path(p).parent.parent.name),
        )
        initdb = found[-1] if found else shutil.which("initdb")
        if not initdb:
            return None, None, "PostgreSQL is not installed (Debian package postgresql)"
        if os.geteuid() != 0:
            return Path(initdb).parent, None, ""
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None, None, "running as root, and there is no postgres user to run initdb as"
        return Path(initdb).parent, "postgres", ""

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # in its own directory: the postgres user may not be able to enter the caller's
        subprocess.run(
            cmd,
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            cwd=self.root,
        )

    def start(self) -> None:
        try:
            if self.user:
                shutil.chown(self.root, self.user)
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            )
            # fsync and synchronous_commit stay on (the defaults): durability is tested
            self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                "-c max_connections=200",
                "start",
            )
        except subprocess.CalledProcessError as e:
            log = self.root / "log"
            detail = log.read_text()[-2000:] if log.exists() else ""
            shutil.rmtree(self.root, ignore_errors=True)
            raise RuntimeError(f"{e.cmd[-1]} failed: {e.stdout.decode()[-2000:]}{detail}") from None

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database: its URL."""
        import psycopg

        name = f"edgefl_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
