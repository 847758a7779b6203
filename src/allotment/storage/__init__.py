"""Storage: SQLAlchemy tables, Alembic migrations, the audit chain, and the queries and row
writes of every table (``repo``: users, tokens, sessions, org, quotas, inventory, settings;
``jobs``; ``requests``; ``plans``; ``disputes``; ``usage``; ``inbox``; ``queue``). Rows in,
rows out: the workflows over them are ``governance/``, which this package never imports."""
