"""Storage: SQLAlchemy tables, Alembic migrations, the audit chain and repository functions."""
