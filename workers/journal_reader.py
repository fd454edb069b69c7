"""Reading journal files from descriptors with the real journal library.

A small ctypes binding to libsystemd's sd-journal (libsystemd.so.0, on every systemd
host), so the worker reads journal files exactly as journalctl does and holds no
parser of the format of its own. The worker opens no paths: the files arrive as
read-only descriptors (`sd_journal_open_files_fd`). Every loop is bounded (entries read
per call, bytes kept per field), and damage never raises: a file the library refuses
is left out, an entry it cannot step to ends the read there (what was read is kept), a
field it cannot read is left out, and a file it drops part-way is noticed; each gives a
note. A worker calls library() before it confines itself: loading needs the library's
files and syscalls (prctl(PR_CAPBSET_READ) in libcap's constructor) that reading does not.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

LIBRARY = "libsystemd.so.0"
# What the journal tool shows of an entry; a caller may ask for fewer or others.
FIELDS = ("MESSAGE", "_HOSTNAME", "SYSLOG_IDENTIFIER", "_SYSTEMD_UNIT", "PRIORITY", "_PID", "_BOOT_ID")
MAX_FILES = 4096  # descriptors in one reader; the broker hands over far fewer per worker
MAX_PRIORITY = 7  # syslog's debug
DEFAULT_FIELD_BYTES = 16384
MAX_MATCH_VALUES = 256  # values for one field: a match holds them all in memory

# Failures of the whole open that are the process's limits, not a file's damage. The
# library maps about 8 MiB of address space per file (its window on the file's hash
# tables stays mapped), so RLIMIT_AS bounds how many files one reader can open.
_NOT_A_FILES_FAULT = frozenset({errno.ENOMEM, errno.EMFILE, errno.ENFILE})

Order = Literal["oldest", "newest"]


class JournalError(OSError):
    """A libsystemd call returned a negative errno."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(code, f"{call}: {os.strerror(code)}")
        self.call = call
        self.code = code  # as errno, but never None


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One entry: its time (microseconds since the epoch, UTC) and the asked-for fields it has.

    A field longer than the reader's max_field_bytes is cut there and named in `cut`.
    Of a field an entry holds more than once, the library returns one value. _BOOT_ID is
    the entry header's (every entry has one), as journalctl shows it."""

    realtime_usec: int
    fields: dict[str, bytes]
    cut: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Filters:
    """What an entry must match. Within one filter any listed value will do; an entry
    must pass every filter given. `max_priority` N keeps PRIORITY 0..N. The time window
    is inclusive at both ends, in microseconds since the epoch."""

    units: tuple[str, ...] = ()
    identifiers: tuple[str, ...] = ()
    hostnames: tuple[str, ...] = ()
    boots: tuple[str, ...] = ()
    max_priority: int | None = None
    since_usec: int | None = None
    until_usec: int | None = None

    def __post_init__(self) -> None:
        if self.max_priority is not None and not 0 <= self.max_priority <= MAX_PRIORITY:
            raise ValueError(f"max_priority must be 0..{MAX_PRIORITY}")
        if any(usec is not None and not 0 <= usec < 1 << 64 for usec in (self.since_usec, self.until_usec)):
            raise ValueError("since_usec and until_usec are microseconds since the epoch")
        for values in (self.units, self.identifiers, self.hostnames, self.boots):
            if len(values) > MAX_MATCH_VALUES:
                raise ValueError(f"at most {MAX_MATCH_VALUES} values in a filter")

    def matches(self) -> list[tuple[str, tuple[str, ...]]]:
        """The sd_journal matches: per field, the values any of which will do."""
        found = [
            ("_SYSTEMD_UNIT", self.units),
            ("SYSLOG_IDENTIFIER", self.identifiers),
            ("_HOSTNAME", self.hostnames),
            ("_BOOT_ID", self.boots),
        ]
        if self.max_priority is not None:
            found.append(("PRIORITY", tuple(str(level) for level in range(self.max_priority + 1))))
        return [(name, values) for name, values in found if values]


class _Journal(ctypes.Structure):
    """sd_journal, opaque."""


_JournalPointer = ctypes.POINTER(_Journal)


def _load(name: str = LIBRARY) -> ctypes.CDLL:
    library = ctypes.CDLL(name, use_errno=True)
    pointer, c_int, size_t, u64 = _JournalPointer, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint64
    signatures: dict[str, tuple[list[type], type | None]] = {
        "sd_journal_open_files_fd": ([ctypes.POINTER(pointer), ctypes.POINTER(c_int), ctypes.c_uint, c_int], c_int),
        "sd_journal_close": ([pointer], None),
        "sd_journal_next": ([pointer], c_int),
        "sd_journal_previous": ([pointer], c_int),
        "sd_journal_seek_head": ([pointer], c_int),
        "sd_journal_seek_tail": ([pointer], c_int),
        "sd_journal_seek_realtime_usec": ([pointer, u64], c_int),
        "sd_journal_get_realtime_usec": ([pointer, ctypes.POINTER(u64)], c_int),
        "sd_journal_get_monotonic_usec": ([pointer, ctypes.POINTER(u64), ctypes.c_char_p], c_int),
        "sd_journal_get_data": (
            [pointer, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(size_t)],
            c_int,
        ),
        "sd_journal_set_data_threshold": ([pointer, size_t], c_int),
        "sd_journal_add_match": ([pointer, ctypes.c_char_p, size_t], c_int),
        "sd_journal_add_disjunction": ([pointer], c_int),
        "sd_journal_add_conjunction": ([pointer], c_int),
        "sd_journal_flush_matches": ([pointer], None),
        "sd_journal_get_usage": ([pointer, ctypes.POINTER(u64)], c_int),
    }
    for function, (argtypes, restype) in signatures.items():
        getattr(library, function).argtypes = argtypes
        getattr(library, function).restype = restype
    return library


_library: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libsystemd, loaded on first use (a worker that reads no journal never maps it)."""
    global _library
    if _library is None:
        _library = _load()
    return _library


def _open(fds: Sequence[int]) -> ctypes._Pointer[_Journal]:
    """sd_journal_open_files_fd: on success the journal owns (and will close) `fds`."""
    handle = _JournalPointer()
    array = (ctypes.c_int * len(fds))(*fds)
    _checked("sd_journal_open_files_fd", library().sd_journal_open_files_fd(ctypes.byref(handle), array, len(fds), 0))
    return handle


def _checked(call: str, result: int) -> int:
    if result < 0:
        raise JournalError(call, -result)
    return result


class JournalReader:
    """The journal files behind `fds`, read as one journal, entries interleaved in time
    as `journalctl --file F1 --file F2 ...` shows them.

    The reader takes the descriptors: once the library has them it closes them with the
    journal, and a file it refuses is closed at once, so after close() none is open (a
    caller must not close them too). Use it as a context manager; close() is idempotent,
    and nothing relies on garbage collection to free the journal or the descriptors."""

    def __init__(
        self,
        fds: Sequence[int],
        *,
        fields: Sequence[str] = FIELDS,
        max_field_bytes: int = DEFAULT_FIELD_BYTES,
    ) -> None:
        if not 0 < len(set(fds)) == len(fds) <= MAX_FILES:
            raise ValueError(f"1..{MAX_FILES} distinct descriptors")
        if max_field_bytes <= 0:
            raise ValueError("max_field_bytes must be positive")
        self._fds = tuple(fds)
        self._unowned = list(self._fds)  # ours to close: the library has not taken them
        self._fields = tuple(fields)
        self._max_field_bytes = max_field_bytes
        self._handle: ctypes._Pointer[_Journal] | None = None
        self.unreadable: dict[int, int] = {}  # position in fds -> errno, files left out
        self.stopped: JournalError | None = None  # what ended the last read before its end
        self.fields_unreadable = 0
        self._opened_usage = 0

    def __enter__(self) -> Self:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Open every file; a file the library refuses is left out (see `unreadable`)."""
        if self._handle is not None or not self._unowned:
            return
        try:
            self._take(self._fds)
        except JournalError as error:
            if error.code in _NOT_A_FILES_FAULT:
                raise  # no file is to blame: probing each would only hide the cause
            # One bad file fails the whole open (and the library then takes none): try
            # each alone, on a copy of its descriptor, then open the others together.
            good = [fd for index, fd in enumerate(self._fds) if self._opens_alone(index, fd)]
            if good:
                self._take(good)
        if self._handle is not None:
            # A hint to the library: decompress no more of a field than is kept of it.
            threshold = self._max_field_bytes + max(map(len, self._fields), default=0) + 1
            _checked("sd_journal_set_data_threshold", library().sd_journal_set_data_threshold(self._handle, threshold))
            self._opened_usage = self._usage()

    def _take(self, fds: Sequence[int]) -> None:
        """The journal of `fds`, which it then owns; on failure they stay ours."""
        self._handle = _open(fds)
        taken = set(fds)
        self._unowned = [fd for fd in self._unowned if fd not in taken]

    def _opens_alone(self, index: int, fd: int) -> bool:
        copy = os.dup(fd)
        try:
            library().sd_journal_close(_open([copy]))  # closes the copy
        except JournalError as error:
            os.close(copy)
            os.close(fd)
            self._unowned.remove(fd)
            self.unreadable[index] = error.code
            return False
        return True

    def close(self) -> None:
        if self._handle is not None:
            library().sd_journal_close(self._handle)
            self._handle = None
        while self._unowned:
            os.close(self._unowned.pop())

    def _journal(self) -> ctypes._Pointer[_Journal]:
        if self._handle is None:
            raise JournalError("sd_journal", errno.EBADF)
        return self._handle

    # The library's calls, each raising JournalError on a negative return.

    def add_match(self, name: str, value: str | bytes) -> None:
        data = name.encode() + b"=" + (value.encode() if isinstance(value, str) else value)
        _checked("sd_journal_add_match", library().sd_journal_add_match(self._journal(), data, len(data)))

    def add_disjunction(self) -> None:
        _checked("sd_journal_add_disjunction", library().sd_journal_add_disjunction(self._journal()))

    def add_conjunction(self) -> None:
        _checked("sd_journal_add_conjunction", library().sd_journal_add_conjunction(self._journal()))

    def flush_matches(self) -> None:
        library().sd_journal_flush_matches(self._journal())

    def seek_head(self) -> None:
        _checked("sd_journal_seek_head", library().sd_journal_seek_head(self._journal()))

    def seek_tail(self) -> None:
        _checked("sd_journal_seek_tail", library().sd_journal_seek_tail(self._journal()))

    def seek_realtime(self, usec: int) -> None:
        _checked("sd_journal_seek_realtime_usec", library().sd_journal_seek_realtime_usec(self._journal(), usec))

    def next(self) -> bool:
        return _checked("sd_journal_next", library().sd_journal_next(self._journal())) > 0

    def previous(self) -> bool:
        return _checked("sd_journal_previous", library().sd_journal_previous(self._journal())) > 0

    def realtime_usec(self) -> int:
        usec = ctypes.c_uint64()
        _checked("sd_journal_get_realtime_usec", library().sd_journal_get_realtime_usec(self._journal(), usec))
        return usec.value

    def boot_id(self) -> bytes:
        """The current entry's boot, from its header (where journalctl's output takes it)."""
        usec, boot = ctypes.c_uint64(), ctypes.create_string_buffer(16)
        _checked("sd_journal_get_monotonic_usec", library().sd_journal_get_monotonic_usec(self._journal(), usec, boot))
        return boot.raw.hex().encode()

    def data(self, name: str) -> tuple[bytes, bool] | None:
        """The current entry's value of field `name` and whether it was cut to
        max_field_bytes, or None if the entry has no such field."""
        pointer, length = ctypes.c_void_p(), ctypes.c_size_t()
        result = library().sd_journal_get_data(self._journal(), name.encode(), pointer, length)
        if result == -errno.ENOENT:
            return None
        _checked("sd_journal_get_data", result)
        prefix = len(name) + 1  # the library returns "NAME=value"
        kept = ctypes.string_at(pointer.value or 0, min(length.value, prefix + self._max_field_bytes))
        return kept[prefix:], length.value > prefix + self._max_field_bytes

    def _usage(self) -> int:
        usage = ctypes.c_uint64()
        _checked("sd_journal_get_usage", library().sd_journal_get_usage(self._journal(), usage))
        return usage.value

    # Reading.

    def apply(self, filters: Filters) -> None:
        """Replace the matches with `filters`' (the time window is the read's, not a match)."""
        self.flush_matches()
        for name, values in filters.matches():
            for value in values:
                self.add_match(name, value)
                self.add_disjunction()
            self.add_conjunction()

    def entries(self, filters: Filters, *, order: Order = "oldest", limit: int) -> Iterator[JournalEntry]:
        """At most `limit` entries passing `filters`, oldest or newest first. A failure
        of the library part-way ends the iteration and is kept in `stopped`."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        self.stopped = None
        if self._handle is None:
            return
        self.apply(filters)
        newest = order == "newest"
        self._seek(filters.until_usec if newest else filters.since_usec, newest)
        for _ in range(limit):
            entry = self._step(filters, newest)
            if entry is None:
                return
            yield entry

    def _seek(self, usec: int | None, newest: bool) -> None:
        if usec is not None:
            self.seek_realtime(usec)
        elif newest:
            self.seek_tail()
        else:
            self.seek_head()

    def _step(self, filters: Filters, newest: bool) -> JournalEntry | None:
        # The window's far end ends the read, as in journalctl: entries are in time order.
        try:
            if not (self.previous() if newest else self.next()):
                return None
            usec = self.realtime_usec()
        except JournalError as error:
            self.stopped = error
            return None
        if not newest and filters.until_usec is not None and usec > filters.until_usec:
            return None
        if newest and filters.since_usec is not None and usec < filters.since_usec:
            return None
        return self._entry(usec)

    def _entry(self, usec: int) -> JournalEntry:
        fields: dict[str, bytes] = {}
        cut = set()
        for name in self._fields:
            try:
                found = (self.boot_id(), False) if name == "_BOOT_ID" else self.data(name)
            except JournalError:
                self.fields_unreadable += 1
                continue
            if found is not None:
                fields[name], was_cut = found
                if was_cut:
                    cut.add(name)
        return JournalEntry(usec, fields, frozenset(cut))

    def files_dropped(self) -> bool:
        """Whether the library has left out a file since opening: it drops one it cannot
        read on from (damage found part-way), silently, and with it that file's usage."""
        if self._handle is None:
            return False
        try:
            return self._usage() < self._opened_usage
        except JournalError:
            return True  # a file it can no longer even stat: say so rather than nothing

    def notes(self) -> list[str]:
        """What a reply must say about what could not be read (files by position, 1-based)."""
        found = [
            f"journal file {index + 1} of {len(self._fds)} could not be opened ({os.strerror(code)}): left out"
            for index, code in sorted(self.unreadable.items())
        ]
        if self.stopped is not None:
            reason = os.strerror(self.stopped.code)
            found.append(f"reading stopped at a damaged entry ({reason}): later entries missing")
        if self.files_dropped():
            found.append("a journal file is damaged part-way: its entries after the damage are missing")
        if self.fields_unreadable:
            found.append(f"{self.fields_unreadable} field(s) of the entries read could not be read: left out")
        return found
