"""Helpers shared by tests (importable as `support`: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CARNET_SHARED", ROOT.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("CARNET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def need_shared(*parts: str) -> Path:
    """Path inside ../shared; skip cleanly when absent, fail in CI."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        if IN_CI:
            pytest.fail(f"{p} is missing in CI")
        pytest.skip(f"{p} not available")
    return p


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 now (for a child process that must be told its port in advance)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` until true (not a timing assertion: the deadline only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


CARNET = [sys.executable, "-m", "config.cli"]


def start_serve(args: list[str], **env: str) -> tuple[subprocess.Popen, bytes]:
    """`carnet serve` + `args` in a process group of its own, with `env` added to the environment;
    returns the process and what it printed until "Stop with Ctrl-C" (or until it exits, or 30 s).
    The caller stops it (os.killpg)."""
    proc = subprocess.Popen(CARNET + ["serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **env}, start_new_session=True)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while b"Stop with Ctrl-C" not in out and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise
    return proc, out


_PG_PROBLEM: list[str | None] = []


def pg_problem() -> str | None:
    """Why PostgreSQL at PG_URL cannot be used (None when it can); asked once per process."""
    if not _PG_PROBLEM:
        from sqlalchemy import text

        from registry.db import make_engine

        try:
            eng = make_engine(PG_URL, pool_size=1)
            with eng.connect() as c:
                c.execute(text("select 1"))
            eng.dispose()
            _PG_PROBLEM.append(None)
        except Exception as exc:  # noqa: BLE001 - any connection failure means "not available"
            _PG_PROBLEM.append(str(exc))
    return _PG_PROBLEM[0]


@contextmanager
def database(kind: str, tmp_path: Path, filename: str = "registry.db") -> Iterator[tuple[str, str | None]]:
    """An empty database as (url, search_path): `kind` "sqlite", a file in `tmp_path`; "postgresql", a
    schema of its own at PG_URL, dropped afterwards, so runs do not see each other. A missing PostgreSQL
    skips, except in CI where it fails."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / filename}", None
        return
    problem = pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not available: {problem}")
    from sqlalchemy import text

    from registry.db import make_engine

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL, pool_size=1)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield PG_URL, schema
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextmanager
def fresh_engine(kind: str, tmp_path: Path, filename: str = "registry.db") -> Iterator[Any]:
    """An engine on a fresh `database` with Carnet's whole schema (`create_schema`), disposed afterwards."""
    from registry.db import create_schema, make_engine

    with database(kind, tmp_path, filename) as (url, search_path):
        eng = make_engine(url, pg_search_path=search_path)
        try:
            create_schema(eng)
            yield eng
        finally:
            eng.dispose()


_SCHEMAS: dict[str, object] = {}


def xdsb_schema():
    """The official XDS.b schema (ebRS 3.0 + IHE), loaded once; skips without ../shared."""
    from lxml import etree

    if "xdsb" not in _SCHEMAS:
        path = need_shared("xsd", "IHE", "XDS.b_DocumentRepository.xsd")
        _SCHEMAS["xdsb"] = etree.XMLSchema(etree.parse(str(path)))
    return _SCHEMAS["xdsb"]


SOAP_NS = "http://www.w3.org/2003/05/soap-envelope"
WSA_NS = "http://www.w3.org/2005/08/addressing"


def soap_envelope(body: bytes, action: str, *, message_id: str | None = None, to: str = "http://localhost/") -> bytes:
    """A SOAP 1.2 request with WS-Addressing around `body` (an element's bytes, no declaration)."""
    import uuid

    message_id = message_id or f"urn:uuid:{uuid.uuid4()}"
    return (
        f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:a="{WSA_NS}"><s:Header>'
        f'<a:Action s:mustUnderstand="1">{action}</a:Action><a:MessageID>{message_id}</a:MessageID>'
        f'<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>'
        f'<a:To s:mustUnderstand="1">{to}</a:To></s:Header><s:Body>'
    ).encode() + body + b"</s:Body></s:Envelope>"


def post_soap(url: str, envelope: bytes, *, content_type: str = "application/soap+xml; charset=UTF-8"):
    """POST a SOAP message; returns (HTTP status, content type, parsed envelope root)."""
    import urllib.error
    import urllib.request

    from lxml import etree

    req = urllib.request.Request(url, data=envelope, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, ctype, data = resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        status, ctype, data = err.code, err.headers.get("Content-Type", ""), err.read()
    return status, ctype, etree.fromstring(data)


def soap_body(envelope_root):
    """The first child element of env:Body."""
    body = envelope_root.find(f"{{{SOAP_NS}}}Body")
    return next(c for c in body if isinstance(c.tag, str))


def registry_error_codes(element) -> list[str]:
    rs = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
    return [e.get("errorCode") for e in element.iter(f"{{{rs}}}RegistryError")]
