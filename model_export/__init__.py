"""Offline tools that turn model checkpoints into voiced bundles (needs the `export` extra)."""
