"""The gateway: a ``model`` name → the organization's deployment → a ready replica."""
