"""Settings precedence: defaults < TOML < CARNET_* environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings, SettingsError, load_settings


def test_embedded_defaults(tmp_path):
    s = load_settings(environ={})
    assert (s.host, s.http_port, s.threads, s.max_query_results) == ("127.0.0.1", 8080, 4, 10000)
    assert s.registry_database_url == f"sqlite:///{Path('var').resolve() / 'registry.db'}"


def test_toml_then_environment_then_flags(tmp_path):
    cfg = tmp_path / "carnet.toml"
    cfg.write_text(
        '[carnet]\nhttp_port = 9000\nhost = "0.0.0.0"\ndatabase_url = "postgresql://db/x"\n'
        '[registry]\nrelaxed_rules = ["DE.hash.required"]\nmax_query_results = 50\n'
    )
    s = load_settings(cfg, environ={})
    assert (s.http_port, s.host, s.registry_database_url) == (9000, "0.0.0.0", "postgresql://db/x")
    assert s.relaxed_rules == ("DE.hash.required",) and s.max_query_results == 50

    env = {"CARNET_HTTP_PORT": "9100", "CARNET_RELAXED_RULES": "DE.size.required, DE.hash.required"}
    s = load_settings(cfg, environ=env)
    assert s.http_port == 9100 and s.relaxed_rules == ("DE.size.required", "DE.hash.required")

    s = load_settings(cfg, environ=env, overrides={"http_port": 9200, "host": None})
    assert s.http_port == 9200 and s.host == "0.0.0.0"  # a flag not given does not override


def test_config_file_from_environment(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[carnet]\nthreads = 3\n")
    assert load_settings(environ={"CARNET_CONFIG": str(cfg)}).threads == 3


@pytest.mark.parametrize(
    "text,env",
    [("[carnet]\nhttp_port = 'eighty'\n", {}), ("not toml [", {}), ("", {"CARNET_THREADS": "many"})],
)
def test_bad_settings_are_reported(tmp_path, text, env):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(SettingsError):
        load_settings(cfg, environ=env)


def test_default_settings_object_is_the_embedded_default():
    assert Settings().data_dir == Path("var")


def test_default_audit_sink_keeps_a_bounded_history():
    from registry.ports import AuditRecord, MemoryAuditSink, TransactionContext

    sink = MemoryAuditSink(keep=3)
    for i in range(5):
        sink.record(AuditRecord(f"ITI-{i}", "success", TransactionContext(f"ITI-{i}")))
    assert [e.transaction for e in sink.events] == ["ITI-2", "ITI-3", "ITI-4"]


def test_repository_settings_from_toml_and_environment(tmp_path):
    cfg = tmp_path / "carnet.toml"
    cfg.write_text(
        '[repository]\nunique_id = "1.2.250.1.999.1"\nblob_store = "s3"\ns3_endpoint = "127.0.0.1:9000"\n'
        's3_secure = false\nblob_dir = "blobs"\n'
        '[repository.signatures]\nmode = "record"\ntrust_anchors = ["ca"]\n'
    )
    s = load_settings(cfg, environ={"CARNET_S3_SECRET_KEY": "s3cr3t", "CARNET_SIGNATURE_MODE": "reject"})
    assert (s.repository_unique_id, s.blob_store, s.s3_endpoint, s.s3_secure) == (
        "1.2.250.1.999.1", "s3", "127.0.0.1:9000", False)
    assert s.s3_secret_key == "s3cr3t"
    assert s.signatures == {"mode": "reject", "trust_anchors": ["ca"]}
    assert s.config_dir == tmp_path
    with pytest.raises(SettingsError):
        load_settings(environ={"CARNET_BLOB_STORE": "tape"})


def test_repository_unique_id_is_made_once_and_kept(tmp_path):
    from config.settings import repository_unique_id

    s = Settings(data_dir=tmp_path)
    first = repository_unique_id(s)
    assert first.startswith("2.25.") and first[5:].isdigit()
    assert repository_unique_id(Settings(data_dir=tmp_path)) == first
    assert repository_unique_id(Settings(data_dir=tmp_path, repository_unique_id="1.2.3")) == "1.2.3"
    assert (s.blob_path, s.master_key_path) == (tmp_path / "blobs", tmp_path / "master.key")


def test_pix_atna_and_tls_settings_from_toml_and_environment(tmp_path):
    cfg = tmp_path / "carnet.toml"
    cfg.write_text(
        '[pix]\nmllp_port = 12575\ndomains = ["1.2.250.1.999.1.1", "1.2.250.1.999.1.2"]\n'
        '[[pix.consumers]]\nprotocol = "mllp"\nhost = "his"\nport = 2576\ndomains = ["1.2.250.1.999.1.1"]\n'
        '[[pix.consumers]]\nprotocol = "soap"\nurl = "https://his/pix"\n'
        '[atna]\naudit_source_id = "node-1"\narr_syslog_port = 6514\n'
        '[[atna.destinations]]\ntransport = "udp"\nhost = "arr"\nport = 514\n'
        '[tls]\ncertificate = "node.pem"\nmllp = true\nrequire_client_certificate = false\n'
    )
    s = load_settings(cfg, environ={"CARNET_INS_OIDS": "1.2.250.1.213.1.4.8,1.2.250.1.213.1.4.9"})
    assert s.mllp_port == 12575 and s.pix_domains == ("1.2.250.1.999.1.1", "1.2.250.1.999.1.2")
    assert [c["protocol"] for c in s.pix_consumers] == ["mllp", "soap"]
    assert s.ins_oids == ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9")
    assert (s.audit_source_id, s.arr_syslog_port, s.audit_destinations[0]["port"]) == ("node-1", 6514, 514)
    assert (s.tls_certificate, s.tls_mllp, s.tls_http, s.tls_require_client_certificate) == (
        Path("node.pem"), True, False, False)
    assert load_settings(environ={}).ins_oids[2:] == ("1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11")


def test_a_list_of_tables_must_be_one(tmp_path):
    cfg = tmp_path / "carnet.toml"
    cfg.write_text('[[atna.destinations]]\nhost = "arr"\n')  # no transport
    with pytest.raises(SettingsError, match="transport"):
        load_settings(cfg, environ={})
