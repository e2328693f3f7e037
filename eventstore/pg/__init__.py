"""The log in PostgreSQL: the same tables, invariants and chain as the SQLite log, for teams
whose several ingest servers share one database (``eventstore.location`` chooses)."""
