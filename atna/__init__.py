"""ATNA (issue 5): audit messages (`atna.dicom`, `atna.events`), their transport and the Audit Record Repository."""
