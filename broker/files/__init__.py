"""Opening files in directories other users own: the allowlist, no-follow opens, StrictModes."""
