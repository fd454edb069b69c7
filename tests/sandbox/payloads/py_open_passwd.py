"""Read /etc/passwd from inside the worker."""


def read_passwd() -> bytes:
    with open("/etc/passwd", "rb") as file:
        return file.read(64)


attempt(read_passwd, "read /etc/passwd")
