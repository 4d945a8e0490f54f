"""The inventory's parts behind database.py: the engines (SQLite, PostgreSQL), the schema and the transactions."""
