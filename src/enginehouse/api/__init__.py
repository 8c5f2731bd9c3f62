"""Management API: thin routers, one service call each."""
