"""The web dashboard served at ``/`` (server-rendered pages over the services layer)."""
