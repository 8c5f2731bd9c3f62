"""What runs inside a replica: model loading per task type, adapters, batching, the HTTP server.

Start one with ``ENGINEHOUSE_REPLICA_SECRET=... python -m enginehouse.runtime --task-type ...
--base-model ...`` (every call must then carry that secret; see ``enginehouse.replicaauth``).
"""
