"""Write to the handed-over log descriptor (opened read-only by the broker)."""

attempt(lambda: os.write(handed_fd, b"pwned\n"), "write to the handed fd")
