"""The ``enginehouse`` command line: typer commands over the REST API, plus the server-side
administration (``up``, ``orgs``, ``keys``) that works on the server's own database."""
