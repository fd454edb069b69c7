"""SIGKILL the test process (its pid comes in PARAMS)."""

import signal

attempt(lambda: os.kill(PARAMS["test_pid"], signal.SIGKILL), "kill(test pid, SIGKILL)")
