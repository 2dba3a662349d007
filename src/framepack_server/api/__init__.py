"""The HTTP API: WaveSpeed-compatible routes, auth, uploads, webhooks. Knows no torch."""
