"""The SQLite store: ``store`` (opening, group commits, reads) and ``rows``
(the schema and the SQL that turns records into rows and back)."""
