"""List the worker's root directory."""

attempt(lambda: os.listdir("/"), "listdir /")
