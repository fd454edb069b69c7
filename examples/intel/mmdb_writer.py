"""A minimal MaxMind DB (.mmdb) writer, standard library only.

Written for Bastion's sample databases from the format specification at
https://maxmind.github.io/MaxMind-DB/ (version 2.0). It covers only what the
samples need and makes these choices:

* Always an IPv6 tree (``ip_version`` 6). IPv4 networks are stored at
  ``::a.b.c.d/(96 + prefix)``, i.e. under ``::/96`` as the spec describes, so
  readers looking up an IPv4 address find them. As MaxMind does, the
  ``::ffff:0:0/96`` (IPv4-mapped) and ``2002::/16`` (6to4) subtrees are
  aliases: their records point at the node that starts the IPv4 space.
* Networks are inserted into a binary trie in order of prefix length, so a
  more specific network always wins over the wider one around it, whatever
  order ``insert`` was called in. Networks with host bits set are rejected.
* Nodes are numbered breadth first from the root (node 0). A record holds a
  node number, ``node_count`` for "no data", or ``node_count + 16 + offset``
  for a value at ``offset`` in the data section.
* Record size 24, 28 or 32 bits (28 packs the top nibbles into a middle byte).
* Data types: utf8_string (``str``), uint32 (``int``), uint16 and uint64 (the
  ``Uint16``/``Uint64`` wrappers the metadata needs), map (``dict``, ``str``
  keys) and array (``list``). No pointers: identical values are stored once
  and shared by their records. Output depends only on the inputs; there is
  no clock: ``build_epoch`` is given, and must not be 0 (libmaxminddb, the C
  reader behind ``maxminddb.MODE_MMAP_EXT``, takes 0 for "missing").
"""

from __future__ import annotations

import ipaddress
from collections import deque
from typing import Any

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
SEPARATOR = bytes(16)  # between the search tree and the data section
IPV4_START_DEPTH = 96  # IPv4 space lives under ::/96
ALIASES = (("::ffff:0:0", 96), ("2002::", 16))

_STRING, _UINT16, _UINT32, _MAP, _UINT64, _ARRAY = 2, 5, 6, 7, 9, 11


class Uint16(int):
    """An int to be encoded as uint16."""


class Uint64(int):
    """An int to be encoded as uint64."""


class _Node:
    __slots__ = ("children",)

    def __init__(self, fill: Child = None) -> None:
        self.children: list[Child] = [fill, fill]


Child = _Node | int | None  # node, data-section offset, or no data


def _control(type_no: int, size: int) -> bytes:
    if size < 29:
        marker, extra = size, b""
    elif size < 285:
        marker, extra = 29, bytes([size - 29])
    elif size < 65_821:
        marker, extra = 30, (size - 285).to_bytes(2, "big")
    elif size < 16_843_037:
        marker, extra = 31, (size - 65_821).to_bytes(3, "big")
    else:
        raise ValueError(f"field too large: {size}")
    if type_no <= 7:
        return bytes([type_no << 5 | marker]) + extra
    return bytes([marker, type_no - 7]) + extra  # extended type


def _uint(type_no: int, value: int, bits: int) -> bytes:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{value} does not fit uint{bits}")
    payload = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return _control(type_no, len(payload)) + payload


def encode(value: Any) -> bytes:
    """Encode one value in the data-section format."""
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _control(_STRING, len(raw)) + raw
    if isinstance(value, Uint16):
        return _uint(_UINT16, value, 16)
    if isinstance(value, Uint64):
        return _uint(_UINT64, value, 64)
    if isinstance(value, int) and not isinstance(value, bool):
        return _uint(_UINT32, value, 32)
    if isinstance(value, list):
        return _control(_ARRAY, len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("map keys must be str")
        body = b"".join(encode(k) + encode(v) for k, v in value.items())
        return _control(_MAP, len(value)) + body
    raise TypeError(f"unsupported type: {type(value).__name__}")


def _bit(bits: int, depth: int) -> int:
    return (bits >> (127 - depth)) & 1


def _node_at(root: _Node, bits: int, depth: int) -> _Node:
    """The node reached after `depth` bits of `bits`, creating nodes on the way."""
    node = root
    for level in range(depth):
        child = node.children[_bit(bits, level)]
        if not isinstance(child, _Node):
            child = _Node(child)  # push an existing value one level down
            node.children[_bit(bits, level)] = child
        node = child
    return node


def _pack(left: int, right: int, record_size: int) -> bytes:
    if record_size == 28:
        middle = (left >> 24) << 4 | (right >> 24)
        return (left & 0xFFFFFF).to_bytes(3, "big") + bytes([middle]) + (right & 0xFFFFFF).to_bytes(3, "big")
    width = record_size // 8
    return left.to_bytes(width, "big") + right.to_bytes(width, "big")


class MMDBWriter:
    """Collects networks and values, then serialises them with `to_bytes`."""

    def __init__(
        self,
        database_type: str,
        description: dict[str, str],
        *,
        build_epoch: int,
        languages: tuple[str, ...] = ("en",),
        record_size: int = 24,
    ) -> None:
        if record_size not in (24, 28, 32):
            raise ValueError("record_size must be 24, 28 or 32")
        if build_epoch <= 0:
            raise ValueError("build_epoch must be a positive Unix time")
        self.database_type = database_type
        self.description = dict(description)
        self.languages = list(languages)
        self.record_size = record_size
        self.build_epoch = build_epoch
        self._data = bytearray()
        self._offsets: dict[bytes, int] = {}
        self._networks: list[tuple[int, int, int]] = []  # (tree depth, bits, offset)

    def insert(self, network: str, value: dict[str, Any]) -> None:
        net = ipaddress.ip_network(network)  # strict: host bits set is an error
        shift = IPV4_START_DEPTH if net.version == 4 else 0
        if net.prefixlen + shift == 0:
            raise ValueError("a network must have a prefix")
        self._networks.append((net.prefixlen + shift, int(net.network_address), self._store(value)))

    def _store(self, value: dict[str, Any]) -> int:
        raw = encode(value)
        if raw not in self._offsets:
            self._offsets[raw] = len(self._data)
            self._data += raw
        return self._offsets[raw]

    def _tree(self) -> _Node:
        root = _Node()
        for depth, bits, offset in sorted(self._networks, key=lambda n: n[0]):
            _node_at(root, bits, depth - 1).children[_bit(bits, depth - 1)] = offset
        ipv4_root = _node_at(root, 0, IPV4_START_DEPTH)
        for prefix, length in ALIASES:
            bits = int(ipaddress.IPv6Address(prefix))
            _node_at(root, bits, length - 1).children[_bit(bits, length - 1)] = ipv4_root
        return root

    def _search_tree(self, nodes: list[_Node]) -> bytes:
        index = {id(node): number for number, node in enumerate(nodes)}
        count = len(nodes)
        if count + len(SEPARATOR) + len(self._data) >= 1 << self.record_size:
            raise ValueError("database too large for the record size")

        def record(child: Child) -> int:
            if child is None:
                return count
            if isinstance(child, _Node):
                return index[id(child)]
            return count + len(SEPARATOR) + child

        return b"".join(_pack(record(n.children[0]), record(n.children[1]), self.record_size) for n in nodes)

    def metadata(self, node_count: int) -> dict[str, Any]:
        return {
            "binary_format_major_version": Uint16(2),
            "binary_format_minor_version": Uint16(0),
            "build_epoch": Uint64(self.build_epoch),
            "database_type": self.database_type,
            "description": self.description,
            "ip_version": Uint16(6),
            "languages": self.languages,
            "node_count": node_count,
            "record_size": Uint16(self.record_size),
        }

    def to_bytes(self) -> bytes:
        nodes = _breadth_first(self._tree())
        return (
            self._search_tree(nodes)
            + SEPARATOR
            + bytes(self._data)
            + METADATA_MARKER
            + encode(self.metadata(len(nodes)))
        )


def _breadth_first(root: _Node) -> list[_Node]:
    """Every node once (aliases make the trie a DAG), root first."""
    order: list[_Node] = []
    seen: set[int] = set()
    queue = deque([root])
    while queue:
        node = queue.popleft()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        queue.extend(c for c in node.children if isinstance(c, _Node))
    return order
