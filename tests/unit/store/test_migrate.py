"""The schema head read from the version files (no alembic import on every scan) is alembic's head."""

from scanner.store.migrate import alembic_head_revision, head_revision


def test_head_from_files_is_alembics_head() -> None:
    assert head_revision() == alembic_head_revision()
