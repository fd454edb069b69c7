"""What every sandbox layer module shares: its failure type, LayerError."""

from __future__ import annotations


class LayerError(Exception):
    """A layer could not be applied on this host."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"{layer}: {reason}")
        self.layer = layer
        self.reason = reason
