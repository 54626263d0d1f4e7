"""Audit Record Repository (IHE ATNA): syslog receivers, the audit store, ITI-81 and the
per-patient access history. Submodules: schema, store, fhir, history, receiver, http."""
