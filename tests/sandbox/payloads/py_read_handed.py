"""Positive control: reading the handed-over descriptor must work and return the file's first bytes."""

expected = PARAMS["handed_head"].encode()
try:
    data = os.read(handed_fd, len(expected))
except OSError as exc:
    report("BLOCKED", f"cannot read the handed fd: {error_name(exc)}")
if data != expected:
    report("BLOCKED", f"read {data!r}, not the file's first bytes")
report("OK", f"read {len(data)} bytes, equal to the file's first bytes")
