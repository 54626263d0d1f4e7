"""Fixtures of the ebRIM codec tests: the official XDS.b schema (loaded once) and a safe parser."""

from __future__ import annotations

import pytest
from lxml import etree

from support import need_shared

SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@pytest.fixture(scope="session")
def xdsb_schema() -> etree.XMLSchema:
    """IHE XDS.b_DocumentRepository.xsd (imports rs/rim/lcm/query): validates every ebRS message."""
    path = need_shared("xsd", "IHE", "XDS.b_DocumentRepository.xsd")
    return etree.XMLSchema(etree.parse(str(path), etree.XMLParser(no_network=True)))
