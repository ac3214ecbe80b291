"""The collector's SQLite store, with journy.io's profile semantics.

- ``schema.py``: the tables and opening a database (created, or upgraded in place);
- ``writer.py``: the group-commit write transaction and what each write does in it;
- ``queries.py``: the reads, each a function of a connection;
- ``rest.py``: what the REST API's calls read and write;
- ``database_thread.py``: the one thread that owns the connection and runs every job;
- ``store.py``: ``Store``, the thread-safe front the server and ``CollectorThread`` use.
"""

from journy_analytics.collector._store.queries import INSPECTOR_FILTERS
from journy_analytics.collector._store.schema import SCHEMA_VERSION
from journy_analytics.collector._store.store import Store
from journy_analytics.collector._store.writer import IngestResult

__all__ = ["INSPECTOR_FILTERS", "SCHEMA_VERSION", "IngestResult", "Store"]
