"""The demo: a tiny text-generation model and two adapters, built locally and deployed."""
