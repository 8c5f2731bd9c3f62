"""The server's ``GET /metrics``: the gateway's own series, replica counts from the database, and
every ready replica's series re-exposed with ``organization``, ``engine`` and ``replica`` labels."""
