"""Become root again."""

attempt(lambda: os.setuid(0), "setuid(0)")
