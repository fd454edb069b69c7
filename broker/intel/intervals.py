"""Disjoint address intervals from a threat-intel database's networks (broker/intel/compile.py).

Interval construction relies on CIDR blocks being either nested or disjoint:
a sweep over the blocks sorted by (start, prefix length) keeps a stack of
the open blocks, which at any address is exactly the chain of blocks
containing it. An interval is emitted whenever that stack changes, and its
membership is the stack's entries, innermost block first.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import chain

from bastion_wire.intel_db import V4_BUCKETS

FEED_SHIFT = 32  # entry key: ((network << 8 | prefix length) << FEED_SHIFT) | feed index


@dataclass
class Tables:
    """One version's intervals: inclusive bounds and the offset of each one's membership list."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    members: list[int] = field(default_factory=list)


def sweep(keys: list[int], bits: int, first_id: int, words: list[int]) -> Tables:
    """Disjoint intervals over `keys` (sorted entry keys whose ids start at first_id).

    Membership lists are appended to `words`. Entries with the same network
    form one block; blocks arrive sorted by (start, prefix length), so an
    enclosing block always comes before the blocks nested in it. The loop is
    the compile's hot path, hence one emission site and locals only.
    """
    out = Tables()
    starts, ends, members = out.starts, out.ends, out.members
    span = [(1 << (bits - plen)) - 1 for plen in range(bits + 1)]
    # The stack of open blocks, outermost first: end address, first and last
    # entry id, membership offset (-1 until an interval needs it).
    s_end: list[int] = []
    s_first: list[int] = []
    s_last: list[int] = []
    s_off: list[int] = []
    cursor = previous = last_offset = last_high = -1
    beyond = (1 << bits) << 8 << FEED_SHIFT  # a sentinel block past the address space closes every open block
    for number, key in enumerate(chain(keys, (beyond,)), first_id):
        network = key >> FEED_SHIFT
        if network == previous:  # the same network in another feed: same block
            s_last[-1] = number
            continue
        previous = network
        start = network >> 8
        # Emit what the open blocks cover before `start`, closing those that end there.
        while s_end:
            end = s_end[-1]
            high = end if end < start else start - 1
            if cursor <= high:
                offset = s_off[-1]
                if offset < 0 and len(s_off) == 1 and s_first[0] == s_last[0]:
                    offset = s_off[0] = len(words)  # the common case, inlined: one entry, not nested
                    words.append(1)
                    words.append(s_first[0])
                elif offset < 0:
                    offset = _membership(s_first, s_last, s_off, words)
                if offset == last_offset and cursor == last_high + 1:
                    # Distinct blocks never share a list, so for CIDR input this
                    # never fires; it states the invariant rather than argues it.
                    ends[-1] = high
                else:
                    starts.append(cursor)
                    ends.append(high)
                    members.append(offset)
                last_offset, last_high, cursor = offset, high, high + 1
            if end >= start:
                break
            s_end.pop()
            s_first.pop()
            s_last.pop()
            s_off.pop()
        s_end.append(start + span[network & 0xFF])
        s_first.append(number)
        s_last.append(number)
        s_off.append(-1)
        cursor = start
    return out


def _membership(s_first: list[int], s_last: list[int], s_off: list[int], words: list[int]) -> int:
    """Append [count, ids...] for the open blocks, innermost (most specific) first; cache it on the top block."""
    offset = len(words)
    words.append(0)
    for level in range(len(s_first) - 1, -1, -1):
        words.extend(range(s_first[level], s_last[level] + 1))  # one block: already in feed order
    words[offset] = len(words) - offset - 1
    s_off[-1] = offset
    return offset


def v4_index(starts: list[int]) -> list[int]:
    return [bisect_left(starts, bucket << 16) for bucket in range(V4_BUCKETS + 1)]
