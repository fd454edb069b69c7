"""The append-only, hash-chained audit log: writing, verifying, redacting, syncing."""
