"""Alembic migrations, shipped inside the wheel."""
