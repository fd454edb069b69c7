"""Apply a profile's sandbox layers to the calling worker, in a fixed order.

Order (each step relies on the ones before it):
  1. session      own session/process group; SIGKILL when the broker dies
  2. fd_hygiene   close every descriptor not handed over
  3. environment  empty environment
  4. rlimits      CPU, address space, open files, processes, file size 0, core 0
The namespace, identity, capability, Landlock and seccomp layers slot in
after these (see docs/SANDBOX.md). A required layer that fails raises
LayerError; a best_effort one is reported as skipped.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.sandbox import environment, fd_hygiene, rlimits, session
from broker.sandbox.layer import LayerError
from broker.sandbox.profile import Profile


def confine(profile: Profile, keep_fds: set[int], expected_parent: int) -> list[str]:
    """Return the names of the layers applied, prefixed 'skipped:' when a best-effort one was not."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("session", lambda: session.apply(expected_parent)),
        ("fd_hygiene", lambda: fd_hygiene.apply(keep_fds)),
        ("environment", environment.apply),
        ("rlimits", lambda: rlimits.apply(profile.rlimits)),
    ]
    applied: list[str] = []
    for name, step in steps:
        try:
            step()
            applied.append(name)
        except LayerError:
            if getattr(profile.layers, name) == "required":
                raise
            applied.append(f"skipped:{name}")
    return applied
