"""A small mutation-testing driver for the trust-critical modules (issue #28): ``make mutation``.

Each mutant is one change to one module's syntax tree (see :mod:`tests.tools.mutation.mutants`),
written into a private copy of the worktree; the unit tests mapped to that module
(:data:`tests.tools.mutation.targets.TARGETS`) run against it, one mutant at a time, with a timeout.
A mutant is *killed* when a test fails (or the run times out), *survives* otherwise. Mutants listed in
``equivalent.txt`` (each with the reason it cannot change behaviour) are left out of the score.
"""
