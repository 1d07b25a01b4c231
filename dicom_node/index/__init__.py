"""The index: what is stored, in SQL (SQLite by default, PostgreSQL when configured)."""
