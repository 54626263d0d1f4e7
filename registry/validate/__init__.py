"""XDS metadata validation, pure (no database): see `registry.validate.rules` for the rules,
their ids, how to relax them, and the decisions taken where the TF leaves room."""

from registry.validate.rules import (
    RULES,
    ValidationConfig,
    external_targets,
    has_errors,
    normalize_association_type,
    submission_patient_id,
    validate_submission,
)

__all__ = [
    "RULES",
    "ValidationConfig",
    "external_targets",
    "has_errors",
    "normalize_association_type",
    "submission_patient_id",
    "validate_submission",
]
