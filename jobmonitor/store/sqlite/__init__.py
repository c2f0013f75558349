"""The SQLite store: ``store`` (opening, writing a commit's batch, reads) and ``rows``
(the schema and the SQL that turns records into rows and back)."""
