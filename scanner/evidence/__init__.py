"""The evidence pack: a self-contained, signed record of a scan that a third party re-verifies offline."""
