"""What runs inside a replica: model loading per task type, adapters, batching, the HTTP server.

Start one with ``python -m enginehouse.runtime --task-type ... --base-model ...``.
"""
