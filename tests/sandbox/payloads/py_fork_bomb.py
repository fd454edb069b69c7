"""os.fork() in a bounded loop: contained when fewer than 16 forks succeed."""

import time

MAX_FORKS = 64
ESCAPE_THRESHOLD = 16

made, failure = 0, "no error"
for _ in range(MAX_FORKS):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = error_name(exc)
        break
    if pid == 0:
        time.sleep(20)
        os._exit(0)
    made += 1
if made >= ESCAPE_THRESHOLD:
    report("ESCAPED", f"forked {made} processes")
report("BLOCKED", f"{failure} after {made} forks")
