"""Where the public signature-verification test vectors live inside this repository.

Copied as they are from the project's shared vector collection into ``tests/data/vectors/`` (each set
keeps its ``PROVENANCE.md``; ``INDEX.md`` and ``SPEC-NOTES.md`` beside them), so a plain clone runs its
own tests: nothing under ``tests/`` reads outside the repository (``tests/unit/test_layout.py``).
"""

from pathlib import Path

VECTORS = Path(__file__).resolve().parent / "data" / "vectors"
