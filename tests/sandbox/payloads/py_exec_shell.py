"""Replace the worker with a shell."""

attempt(lambda: os.execv("/bin/sh", ["sh", "-c", "id"]), "execv /bin/sh")
