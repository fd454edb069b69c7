"""Layer: an empty environment.

The broker starts workers with env={}; this layer makes sure of it, so no
secret (tokens, credentials) or loader variable (LD_PRELOAD) reaches a worker
or the programs it runs.
"""

from __future__ import annotations

import os

from workers.confine.layer import LayerError


def apply() -> None:
    os.environ.clear()
    if os.environ:
        raise LayerError("environment", "environment could not be emptied")
