"""Saved conversations: the records, their SQLite store and migrations, and export / import."""
