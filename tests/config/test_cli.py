"""The `carnet` command as a user runs it: patients, db upgrade, and serve (what `make run` starts)."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

from sqlalchemy import create_engine, inspect, select

from config.cli import main
from registry.schema import patient
from support import free_port, start_serve

INS = "2800175310042^^^&1.2.250.1.213.1.4.10&ISO"


def _patients(data_dir: Path) -> list[str]:
    eng = create_engine(f"sqlite:///{data_dir / 'registry.db'}")
    with eng.connect() as c:
        return sorted(c.execute(select(patient.c.patient_id)).scalars())


def test_db_upgrade_creates_the_schema(tmp_path, capsys):
    assert main(["db", "upgrade", "--data-dir", str(tmp_path)]) == 0
    tables = set(inspect(create_engine(f"sqlite:///{tmp_path / 'registry.db'}")).get_table_names())
    assert {"document_entry", "submission_set", "folder", "association", "patient", "alembic_version"} <= tables
    assert "up to date" in capsys.readouterr().out


def test_patients_add_and_import(tmp_path, capsys):
    assert main(["patients", "add", INS, "--data-dir", str(tmp_path)]) == 0
    assert "1 patient(s) added" in capsys.readouterr().out
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# INS of the test bench\n{INS}\n2800175310043^^^&1.2.250.1.213.1.4.10&ISO\n\n")
    assert main(["patients", "import", str(listing), "--data-dir", str(tmp_path)]) == 0
    assert "1 patient(s) added, 1 already known, 0 rejected" in capsys.readouterr().out
    assert _patients(tmp_path) == sorted([INS, "2800175310043^^^&1.2.250.1.213.1.4.10&ISO"])


def test_patients_add_rejects_a_malformed_id(tmp_path, capsys):
    assert main(["patients", "add", "not-a-cx", "--data-dir", str(tmp_path)]) == 1
    assert "not a patient id" in capsys.readouterr().err
    assert _patients(tmp_path) == []


def test_serve_starts_prints_endpoints_and_stops(tmp_path):
    port = free_port()
    proc, out = start_serve(["--data-dir", str(tmp_path)], CARNET_HTTP_PORT=str(port),
                            CARNET_MLLP_PORT=str(free_port()))
    try:
        assert f"http://127.0.0.1:{port}/xds/registry".encode() in out, out.decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/xds/registry?wsdl", timeout=10) as r:
            assert b"RegisterDocumentSet-b" in r.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert (tmp_path / "registry.db").exists()


def test_keys_rotate_rewraps_dossier_keys_and_replaces_the_key_file(tmp_path, capsys, monkeypatch):
    from registry.db import make_engine
    from registry.migrate import upgrade
    from repository.crypto import DocumentBinding, decrypt, encrypt
    from repository.keys import KeyVault, WrongMasterKey, load_master_key

    monkeypatch.delenv("CARNET_MASTER_KEY", raising=False)
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(url)
    old = load_master_key(tmp_path / "master.key", {})
    engine = make_engine(url, pool_size=1)
    binding = DocumentBinding("1.2.3", "4.5.6")
    blob = encrypt(KeyVault(engine, old).data_key_for(INS), binding, b"<ClinicalDocument/>")

    assert main(["keys", "rotate", "--data-dir", str(tmp_path)]) == 0
    assert "1 dossier key(s) re-wrapped" in capsys.readouterr().out
    new = load_master_key(tmp_path / "master.key", {})
    assert new.id != old.id and not (tmp_path / "master.key.new").exists()
    vault = KeyVault(engine, new)
    assert decrypt(vault.get, binding, blob) == b"<ClinicalDocument/>"  # the blob was not touched
    try:
        KeyVault(engine, old).data_key_for(INS, create=False)
        raise AssertionError("the old master key still unwraps")
    except WrongMasterKey:
        pass
    engine.dispose()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _start_workers(tmp_path, port):
    proc, out = start_serve(["--data-dir", str(tmp_path), "--workers", "2"], CARNET_HTTP_PORT=str(port),
                            CARNET_MLLP_PORT=str(free_port()))
    assert b"with 2 process(es)" in out, out.decode()
    deadline = time.monotonic() + 20
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:  # the worker, the audit sender
        time.sleep(0.1)
    return proc


def test_serve_with_two_worker_processes_shares_the_port_and_stops_together(tmp_path):
    port = free_port()
    proc = _start_workers(tmp_path, port)
    try:
        children = _children(proc.pid)
        assert len(children) == 2  # the second serving process and the audit sender
        for _ in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/xds/registry?wsdl", timeout=10) as r:
                assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(c) for c in children)
    finally:
        _kill_group(proc)


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def test_a_worker_stops_when_its_parent_is_killed(tmp_path):
    proc = _start_workers(tmp_path, free_port())
    try:
        children = _children(proc.pid)
        assert len(children) == 2
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(c) for c in children)
    finally:
        _kill_group(proc)


def _established_on(port: int) -> set[int]:
    """Socket inodes of the established TCP connections whose local port is `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def _sockets_of(pid: int, inodes: set[int]) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            count += 1
    return count


def test_two_worker_processes_share_a_burst_of_keep_alive_clients(tmp_path):
    """Once `carnet serve --workers 2` says both processes accept, 16 keep-alive clients connecting at
    once are spread evenly over them, 8 and 8 (keep-alive clients stay on the process that accepted
    them; `config.balance`)."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    port = free_port()
    proc = _start_workers(tmp_path, port)
    conns: list[http.client.HTTPConnection] = []
    try:
        out, deadline = b"", time.monotonic() + 60
        while b"serving processes are accepting" not in out and time.monotonic() < deadline:
            out += proc.stdout.readline()
        assert b"All 2 serving processes are accepting." in out, out.decode()
        serving = [proc.pid, *_children(proc.pid)]  # the second serving process, the audit sender

        def client(_i: int) -> http.client.HTTPConnection:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/xds/registry?wsdl")
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()  # the connection stays open (HTTP/1.1 keep-alive)
            return conn

        with ThreadPoolExecutor(16) as pool:
            conns = list(pool.map(client, range(16)))
        inodes = _established_on(port)
        per_process = {pid: _sockets_of(pid, inodes) for pid in serving}
        assert sum(per_process.values()) == 16, per_process
        assert sorted(per_process.values(), reverse=True)[:2] == [8, 8], per_process
    finally:
        for conn in conns:
            conn.close()
        _kill_group(proc)
