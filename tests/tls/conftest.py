"""Fixtures for the TLS tests: one throw-away PKI per test session, written as PEM files."""

from __future__ import annotations

import pytest

from config.tls import TlsSettings
from pki_support import TlsPki, write_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> TlsPki:
    return write_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server_tls(pki) -> TlsSettings:
    """Carnet's node settings: its certificate, client certificates required, the test CA trusted."""
    return TlsSettings(pki.server.certificate, pki.server.private_key, pki.ca_bundle)
