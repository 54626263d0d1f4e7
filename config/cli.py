"""The `carnet` command: serve, patients add/import, db upgrade."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from config.settings import Settings, SettingsError, load_settings

log = logging.getLogger("carnet")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file (also CARNET_CONFIG)")
    p.add_argument("--data-dir", dest="data_dir", help="where the embedded defaults keep their data")
    p.add_argument("--database-url", dest="database_url", help="registry database (default: SQLite in data dir)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="carnet", description="Carnet: IHE XDS.b registry for shared medical records")
    sub = ap.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start Carnet")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--http-port", dest="http_port", type=int, help="HTTP port (default 8080)")
    serve.add_argument("--threads", type=int, help="worker threads for blocking work (default 4)")
    serve.add_argument("--workers", type=int, help="serving processes sharing the port (default 1)")
    serve.add_argument("--inherited-fd", dest="inherited_fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", dest="ready_fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--balance-fd", dest="balance_fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--balance-slot", dest="balance_slot", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--audit-sender", dest="audit_sender", action="store_true", help=argparse.SUPPRESS)

    patients = sub.add_parser("patients", help="make patients known to the registry")
    psub = patients.add_subparsers(dest="patients_command", required=True)
    add = psub.add_parser("add", help="add patient ids (CX, e.g. 1234^^^&1.2.250.1.213.1.4.8&ISO)")
    _common(add)
    add.add_argument("cx", nargs="+")
    imp = psub.add_parser("import", help="add the patient ids of a file, one CX per line ('-' for stdin)")
    _common(imp)
    imp.add_argument("file")

    keys = sub.add_parser("keys", help="the repository's master key")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    rot = ksub.add_parser("rotate", help="re-wrap every dossier key under a new master key (blobs untouched)")
    _common(rot)

    seal = sub.add_parser("seal", help="the repository's seals of its documents (repository.seal)")
    ssub = seal.add_subparsers(dest="seal_command", required=True)
    ver = ssub.add_parser("verify", help="check a stored document against its seal (exit 0: valid)")
    _common(ver)
    ver.add_argument("unique_id", help="the document's uniqueId")

    db = sub.add_parser("db", help="database maintenance")
    dsub = db.add_subparsers(dest="db_command", required=True)
    up = dsub.add_parser("upgrade", help="create or upgrade the registry schema (Alembic)")
    _common(up)
    return ap


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        k: getattr(args, k, None)
        for k in ("data_dir", "database_url", "host", "http_port", "threads", "workers")
    }
    return load_settings(args.config, overrides=overrides)


def _prepare(settings: Settings):
    """Create the data dir and bring the schema up to date; return the store."""
    from registry.db import make_engine
    from registry.migrate import upgrade
    from registry.store import RegistryStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.registry_database_url)
    return RegistryStore(make_engine(settings.registry_database_url, pool_size=settings.threads))


def _read_cx_lines(path: str):
    fh = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"carnet: {exc}", file=sys.stderr)
        return 2

    if args.command == "db":
        from registry.migrate import upgrade

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.registry_database_url)
        print(f"registry schema is up to date ({_redact(settings.registry_database_url)})")
        return 0

    if args.command == "keys":
        return rotate_master_key(settings)

    if args.command == "seal":
        return verify_seal(settings, args.unique_id)

    if args.command == "patients":
        from registry.validate.formats import cx_patient_id as check_cx

        store = _prepare(settings)
        ids = args.cx if args.patients_command == "add" else list(_read_cx_lines(args.file))
        bad = [(cx, why) for cx in ids if (why := check_cx(cx))]
        for cx, why in bad:
            print(f"carnet: not a patient id: {cx!r}: {why}", file=sys.stderr)
        good = [cx for cx in ids if not check_cx(cx)]
        added = store.import_patients(good)
        print(f"{added} patient(s) added, {len(good) - added} already known, {len(bad)} rejected")
        return 1 if bad else 0

    if args.command == "serve":
        from config.site import run_audit_sender, serve

        if args.audit_sender:
            return run_audit_sender(settings)
        return serve(settings, inherited_fd=args.inherited_fd, ready_fd=args.ready_fd,
                     balance=(args.balance_fd, args.balance_slot) if args.balance_fd is not None else None)
    return 2  # pragma: no cover - argparse requires a command


def rotate_master_key(settings: Settings) -> int:
    """`carnet keys rotate`: a new master key is written beside the current one (`.new`), every
    data key is re-wrapped under it (resumable: a second run finishes an interrupted one), then
    it replaces the current file. Running nodes must be restarted to use it."""
    import os

    from registry.db import make_engine
    from registry.migrate import upgrade
    from repository.keys import KeyVault, MasterKey, load_master_key, read_master_key_file, write_master_key_file

    if os.environ.get("CARNET_MASTER_KEY"):
        print("carnet: the master key comes from CARNET_MASTER_KEY; rotate it where it is kept "
              "(unset it to rotate the key file)", file=sys.stderr)
        return 2
    path = settings.master_key_path
    if not path.exists():
        print(f"carnet: no master key at {path}", file=sys.stderr)
        return 2
    old = load_master_key(path, {})
    pending = path.with_name(path.name + ".new")
    new = read_master_key_file(pending) if pending.exists() else write_master_key_file(pending, MasterKey.generate())
    upgrade(settings.registry_database_url)
    engine = make_engine(settings.registry_database_url, pool_size=1)
    try:
        count = KeyVault(engine, old).rotate(new)
    finally:
        engine.dispose()
    os.replace(pending, path)
    print(f"{count} dossier key(s) re-wrapped under master key {new.id}; {path} replaced. "
          "Restart running Carnet nodes.")
    return 0


def verify_seal(settings: Settings, unique_id: str) -> int:
    """`carnet seal verify <uniqueId>`: the stored document (decrypted) against its seal, the seal
    against the configured seal certificate. Prints the verdict; exit 0 when valid, 1 otherwise."""
    from config.settings import repository_unique_id
    from config.site import build_blob_store, build_seal
    from registry.db import make_engine
    from repository.keys import KeyVault, load_master_key
    from repository.seal import verify_stored

    seal = build_seal(settings)
    if seal is None:
        print("carnet: no seal is configured (seal_certificate, seal_key)", file=sys.stderr)
        return 2
    engine = make_engine(settings.registry_database_url, pool_size=1)
    try:
        vault = KeyVault(engine, load_master_key(settings.master_key_path))
        verdict = verify_stored(build_blob_store(settings), vault, repository_unique_id(settings), unique_id,
                                seal.trust())
    finally:
        engine.dispose()
    print(f"{unique_id}: seal {verdict.status.value}" + ("" if verdict.ok else f": {verdict.reason}"))
    return 0 if verdict.ok else 1


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return url


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
