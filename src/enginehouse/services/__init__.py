"""Business operations: the only layer that writes the database."""
