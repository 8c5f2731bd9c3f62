"""The demo ``enginehouse up --demo`` sets up (``setup.py``), and the tiny models the tests and
the demo's offline fallback build on the spot."""
