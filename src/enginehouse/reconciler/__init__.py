"""The loop that moves engines, replicas and deployments toward what the database says."""
