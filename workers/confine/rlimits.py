"""Layer: resource limits, soft equal to hard so they cannot be raised.

The CPU soft limit equals the hard limit because a process that is PID 1 of
a pid namespace ignores SIGXCPU; at the hard limit the kernel sends SIGKILL.
File size 0 makes any write to a regular file fail with SIGXFSZ/EFBIG.
"""

from __future__ import annotations

import resource

from bastion_wire.plan import Rlimits
from workers.confine.layer import LayerError


def limits_for(rlimits: Rlimits) -> dict[int, int]:
    return {
        resource.RLIMIT_CPU: rlimits.cpu_s,
        resource.RLIMIT_AS: rlimits.address_space_bytes,
        resource.RLIMIT_NOFILE: rlimits.open_files,
        resource.RLIMIT_NPROC: rlimits.processes,
        resource.RLIMIT_FSIZE: rlimits.file_size_bytes,
        resource.RLIMIT_CORE: rlimits.core_bytes,
    }


def apply(rlimits: Rlimits) -> None:
    for which, value in limits_for(rlimits).items():
        try:
            resource.setrlimit(which, (value, value))
        except (OSError, ValueError) as exc:
            raise LayerError("rlimits", f"setrlimit({which}, {value}): {exc}") from None
        if resource.getrlimit(which) != (value, value):
            raise LayerError("rlimits", f"limit {which} did not take effect")
