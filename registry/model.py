"""The ebRIM 3.0 / XDS metadata model: frozen, lossless, free of XML and of I/O.

`registry.ebrim` turns wire XML into these objects and back; validators, the store and the
transaction handlers work only on them. Each class keeps every ebRIM attribute it was given (so a
round trip is exact) and offers the XDS attributes of ITI TF-3 §4.2.3 as read-only properties.
"""

from __future__ import annotations

from typing import Iterable

import attrs

from registry import constants as C


@attrs.frozen
class LocalizedString:
    value: str
    lang: str | None = None
    charset: str | None = None


@attrs.frozen
class Slot:
    name: str
    values: tuple[str, ...] = ()
    slot_type: str | None = None


@attrs.frozen
class Code:
    """A coded value (ITI TF-3 §4.2.3.1.2): code = nodeRepresentation, scheme = codingScheme slot."""

    code: str
    coding_scheme: str
    display_name: str | None = None

    def query_form(self) -> str:
        """The form used by stored query parameters, ``code^^codingScheme`` (ITI TF-2a §3.18.4.1.2.3.4)."""
        return f"{self.code}^^{self.coding_scheme}"


@attrs.frozen
class Author:
    """An author classification's slots (ITI TF-3 §4.2.3.1.4)."""

    person: str | None = None
    institutions: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    specialties: tuple[str, ...] = ()
    telecoms: tuple[str, ...] = ()


def _slot_values(slots: Iterable[Slot], name: str) -> tuple[str, ...]:
    for s in slots:
        if s.name == name:
            return s.values
    return ()


def _first(values: tuple[str, ...]) -> str | None:
    return values[0] if values else None


def _istring_text(ist: tuple[LocalizedString, ...]) -> str | None:
    return ist[0].value if ist else None


@attrs.frozen
class Classification:
    id: str
    classified_object: str
    classification_scheme: str | None = None
    classification_node: str | None = None
    node_representation: str | None = None
    lid: str | None = None
    object_type: str | None = None
    status: str | None = None
    home: str | None = None
    name: tuple[LocalizedString, ...] = ()
    description: tuple[LocalizedString, ...] = ()
    slots: tuple[Slot, ...] = ()

    def slot(self, name: str) -> tuple[str, ...]:
        return _slot_values(self.slots, name)

    def as_code(self) -> Code | None:
        if self.node_representation is None:
            return None
        scheme = _first(self.slot("codingScheme"))
        return Code(self.node_representation, scheme or "", _istring_text(self.name))

    def as_author(self) -> Author:
        return Author(
            person=_first(self.slot("authorPerson")),
            institutions=self.slot("authorInstitution"),
            roles=self.slot("authorRole"),
            specialties=self.slot("authorSpecialty"),
            telecoms=self.slot("authorTelecommunication"),
        )


@attrs.frozen
class ExternalIdentifier:
    id: str
    registry_object: str
    identification_scheme: str
    value: str
    lid: str | None = None
    object_type: str | None = None
    status: str | None = None
    home: str | None = None
    name: tuple[LocalizedString, ...] = ()
    description: tuple[LocalizedString, ...] = ()
    slots: tuple[Slot, ...] = ()


@attrs.frozen
class _RegistryObject:
    """The ebRIM RegistryObject attributes every XDS object has, and their XDS accessors.
    All but `id` are keyword-only, so each subclass adds its own (required) fields freely."""

    id: str
    lid: str | None = attrs.field(default=None, kw_only=True)
    object_type: str | None = attrs.field(default=None, kw_only=True)
    status: str | None = attrs.field(default=None, kw_only=True)
    home: str | None = attrs.field(default=None, kw_only=True)
    version_name: str | None = attrs.field(default=None, kw_only=True)
    version_comment: str | None = attrs.field(default=None, kw_only=True)
    name: tuple[LocalizedString, ...] = attrs.field(default=(), kw_only=True)
    description: tuple[LocalizedString, ...] = attrs.field(default=(), kw_only=True)
    slots: tuple[Slot, ...] = attrs.field(default=(), kw_only=True)
    classifications: tuple[Classification, ...] = attrs.field(default=(), kw_only=True)
    external_identifiers: tuple[ExternalIdentifier, ...] = attrs.field(default=(), kw_only=True)

    def slot(self, name: str) -> tuple[str, ...]:
        return _slot_values(self.slots, name)

    def slot1(self, name: str) -> str | None:
        return _first(self.slot(name))

    def classifications_by(self, scheme: str) -> tuple[Classification, ...]:
        return tuple(c for c in self.classifications if c.classification_scheme == scheme)

    def codes(self, scheme: str) -> tuple[Code, ...]:
        return tuple(
            code for c in self.classifications_by(scheme) if (code := c.as_code()) is not None
        )

    def external_id(self, scheme: str) -> str | None:
        for e in self.external_identifiers:
            if e.identification_scheme == scheme:
                return e.value
        return None

    @property
    def title(self) -> str | None:
        return _istring_text(self.name)


@attrs.frozen
class DocumentEntry(_RegistryObject):
    """rim:ExtrinsicObject, stable or on-demand (ITI TF-3 §4.2.3.2)."""

    mime_type: str | None = None
    is_opaque: bool | None = None
    content_version_name: str | None = None
    content_version_comment: str | None = None

    @property
    def patient_id(self) -> str | None:
        return self.external_id(C.DE_PATIENT_ID)

    @property
    def unique_id(self) -> str | None:
        return self.external_id(C.DE_UNIQUE_ID)

    @property
    def is_on_demand(self) -> bool:
        return self.object_type == C.DOC_ENTRY_ON_DEMAND

    @property
    def authors(self) -> tuple[Author, ...]:
        return tuple(c.as_author() for c in self.classifications_by(C.DE_AUTHOR))

    @property
    def reference_ids(self) -> tuple[str, ...]:
        return self.slot("urn:ihe:iti:xds:2013:referenceIdList")


@attrs.frozen
class SubmissionSet(_RegistryObject):
    """rim:RegistryPackage classified as XDSSubmissionSet (ITI TF-3 §4.2.3.3)."""

    @property
    def patient_id(self) -> str | None:
        return self.external_id(C.SS_PATIENT_ID)

    @property
    def unique_id(self) -> str | None:
        return self.external_id(C.SS_UNIQUE_ID)

    @property
    def source_id(self) -> str | None:
        return self.external_id(C.SS_SOURCE_ID)

    @property
    def authors(self) -> tuple[Author, ...]:
        return tuple(c.as_author() for c in self.classifications_by(C.SS_AUTHOR))


@attrs.frozen
class Folder(_RegistryObject):
    """rim:RegistryPackage classified as XDSFolder (ITI TF-3 §4.2.3.4)."""

    @property
    def patient_id(self) -> str | None:
        return self.external_id(C.FOLDER_PATIENT_ID)

    @property
    def unique_id(self) -> str | None:
        return self.external_id(C.FOLDER_UNIQUE_ID)


@attrs.frozen
class Association(_RegistryObject):
    """rim:Association (ITI TF-3 §4.2.2)."""

    association_type: str
    source_object: str
    target_object: str

    @property
    def submission_set_status(self) -> str | None:
        return self.slot1(C.SLOT_SUBMISSION_SET_STATUS)


@attrs.frozen
class ObjectRef:
    id: str
    home: str | None = None


RegistryObject = DocumentEntry | SubmissionSet | Folder | Association


@attrs.frozen
class SubmitObjectsRequest:
    """lcm:SubmitObjectsRequest, objects in wire order (ITI TF-2b §3.42.4.1).

    `objects` keeps document order so the codec can write the message back unchanged; the
    typed tuples below are views of it. Top-level rim:Classification elements (the way some
    sources classify the SubmissionSet) are folded by the codec into their classified object.
    """

    objects: tuple[RegistryObject, ...] = ()
    object_refs: tuple[ObjectRef, ...] = ()
    slots: tuple[Slot, ...] = ()
    id: str | None = None
    comment: str | None = None

    @property
    def submission_sets(self) -> tuple[SubmissionSet, ...]:
        return tuple(o for o in self.objects if isinstance(o, SubmissionSet))

    @property
    def documents(self) -> tuple[DocumentEntry, ...]:
        return tuple(o for o in self.objects if isinstance(o, DocumentEntry))

    @property
    def folders(self) -> tuple[Folder, ...]:
        return tuple(o for o in self.objects if isinstance(o, Folder))

    @property
    def associations(self) -> tuple[Association, ...]:
        return tuple(o for o in self.objects if isinstance(o, Association))
