"""HTTP edges: the webhook receiver (and later the API and dashboard)."""
