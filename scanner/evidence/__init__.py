"""Evidence packs an auditor re-verifies offline (issue #23)."""
