"""The one hardened XML parser for every inbound document (DESIGN.md §3 rule 5).

No entity expansion, no DTD (any DOCTYPE is rejected: SOAP 1.2 Part 1 §5 forbids it in a SOAP
message anyway), no network, libxml2's default limits (`huge_tree=False`: text nodes ≤ 10 MB,
depth ≤ 256), a byte cap checked before parsing and an element-depth cap checked after. Because
entities are never expanded, a "billion laughs" document costs no more than its own size, and an
external entity (XXE) is never fetched, so no file content can leak into a tree or a message.
"""

from __future__ import annotations

from lxml import etree

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_DEPTH = 128


class XmlInputError(Exception):
    """The peer sent a document we refuse: not well-formed, too big, too deep, or with a DTD."""


def safe_parser() -> etree.XMLParser:
    """A fresh lxml parser with every dangerous feature off (parsers are not thread-safe: one per call)."""
    return etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_pis=False,
        collect_ids=False,
    )


def parse_xml(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> etree._Element:
    """Parse `data` into its root element, or raise `XmlInputError` with a message safe to echo."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("parse_xml takes bytes")
    if len(data) > max_bytes:
        raise XmlInputError(f"XML document of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if not data.strip():
        raise XmlInputError("empty XML document")
    try:
        root = etree.fromstring(bytes(data), parser=safe_parser())
    except etree.XMLSyntaxError as exc:
        raise XmlInputError(f"XML not well-formed: {_first_line(exc)}") from None
    except (ValueError, etree.LxmlError) as exc:
        raise XmlInputError(f"XML not accepted: {_first_line(exc)}") from None
    if root is None:
        raise XmlInputError("XML document has no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlInputError("XML with a document type declaration (DOCTYPE) is not accepted")
    _check(root, max_depth)
    return root


_TOO_DEEP: dict[int, etree.XPath] = {}


def _too_deep(max_depth: int) -> etree.XPath:
    """An XPath that is true when an element sits deeper than `max_depth` elements: evaluated
    level by level in libxml2, not element by element in Python."""
    xp = _TOO_DEEP.get(max_depth)
    if xp is None:
        xp = _TOO_DEEP[max_depth] = etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")
    return xp


def _check(root: etree._Element, max_depth: int) -> None:
    """Depth cap, and no entity reference may survive (there is no DTD to declare one)."""
    if _too_deep(max_depth)(root):
        raise XmlInputError(f"XML nesting deeper than {max_depth} elements")
    if next(root.iter(etree.Entity), None) is not None:
        raise XmlInputError("XML entity references are not accepted")


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()
    return text[0][:300] if text else exc.__class__.__name__
