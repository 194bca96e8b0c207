"""データベース (database): engine, sessions, models and Alembic migrations."""
