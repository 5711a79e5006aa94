"""The sigaudit benchmark (issue 9): ``make bench`` runs ``python -m bench.run``."""
