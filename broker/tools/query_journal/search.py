"""The query_journal call: open the source's journal files, read them in batches of up to
MAX_JOURNAL_FILES per journal worker (one after the other, in one slot), merge, reply.

Each worker reads its batch as one journal, in time order, and stops at max_lines
matches (plus one, to say whether more exist). Across batches the entries are merged by
time and the first max_lines kept, so the reply is in time order over every file of the
source however many batches it took. The call's time is shared by the batches. The output
cap bounds what is kept, not what one batch may send: a batch is taken in file order, not
time order, so the entries that fit the cap may lie in any batch, and every batch is read
(each sends at most the cap; the kept entries never pass it).
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import mcp_types as types

from bastion_wire.protocol import JournalEntry, JournalRequest
from broker.call_record import Coverage, SearchEnd, preview
from broker.files.opened_files import SearchTarget
from broker.pool.outcome import raise_for
from broker.pool.worker_process import WorkerResult
from broker.tools.context import CallContext
from broker.tools.query_journal import tool as query_journal

MAX_NOTES = 10
AUDIT_SKIPPED = 50
# The worker names a file by its place in the batch; the reply names it.
FILE_NOTE = re.compile(r"^journal file ([0-9]+) of [0-9]+ ")


@dataclass
class Merged:
    """What the batches of one call have produced so far."""

    entries: list[JournalEntry] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    workers: int = 0
    more: bool = False  # matches exist beyond max_lines
    capped: bool = False  # the output cap was reached
    timed_out: list[str] = field(default_factory=list)  # files the time left unsearched
    bytes_received: int = 0
    earlier_cpu_s: float = 0.0


def request_for(args: query_journal.JournalArgs, ctx: CallContext) -> JournalRequest:
    """The workers' request: the client's filters within the source's restrictions."""
    source = ctx.allowlist.journals.source(args.source).source
    return JournalRequest(
        pattern=args.grep_pattern,
        limit=args.max_lines,
        max_line_bytes=query_journal.max_line_bytes(ctx.policy.limits),
        units=list(query_journal.restricted(args.units, source.units, "unit")),
        identifiers=list(query_journal.restricted(args.identifiers, source.identifiers, "identifier")),
        hostnames=list(args.hostnames),
        boots=list(args.boots),
        max_priority=args.max_priority,
        since_usec=args.since_usec,
        until_usec=args.until_usec,
        order="newest" if args.newest_first else "oldest",
        ignore_case=args.ignore_case,
        count_only=args.count_only,
    )


async def run(args: query_journal.JournalArgs, ctx: CallContext) -> types.CallToolResult:
    request = request_for(args, ctx)  # refuses a filter outside the source's restrictions first
    ctx.record.engine = "journal+grep"
    target = ctx.allowlist.journals.open_search(args.source)
    try:
        async with ctx.slot():
            merged = await _search(ctx, target, request)
    finally:
        target.close()
    return _reply(ctx, target, request, merged)


async def _search(ctx: CallContext, target: SearchTarget, request: JournalRequest) -> Merged:
    limits = ctx.policy.limits
    deadline = time.monotonic() + limits.timeout_s
    merged = Merged()
    while target.files:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            merged.timed_out = [log.path for log in target.files] + list(target.pending)
            break
        names = [log.path for log in target.files]
        result, worker = await ctx.run_worker(
            "journal",
            request,
            [log.fd for log in target.files],
            left_s,
            limits.max_output_bytes,
        )
        target.close()
        if result.outcome == "timeout" and merged.workers:  # earlier batches answered: keep them
            merged.timed_out = names + list(target.pending)
            break
        raise_for(result, limits.timeout_s)
        _absorb(merged, request, result, limits.max_output_bytes)
        merged.notes += [_named(note, names, target.log_path) for note in result.notes]
        merged.files += len(names)
        merged.workers += 1
        merged.bytes_received += result.bytes_received
        if not target.pending:
            break
        if not worker.reaped:  # a batch stopped at the cap was killed and reaped already
            await ctx.stop_early(worker, result)
        merged.earlier_cpu_s += result.cpu_s
        ctx.allowlist.journals.open_next(target)
    return merged


def _absorb(merged: Merged, request: JournalRequest, result: WorkerResult, max_bytes: int) -> None:
    """Fold one batch in: entries merged in time order, the first `limit` that fit
    `max_bytes` kept."""
    merged.counts.update(result.host_counts or {})
    newest = request.order == "newest"
    together = sorted(merged.entries + result.entries, key=lambda entry: entry.time_usec, reverse=newest)
    capped = result.outcome == "output_capped"
    if capped and result.entries:
        # The batch stopped at the cap: its entries beyond the last one sent are unknown,
        # so no entry of another batch beyond that one can be said to be among the first.
        horizon = result.entries[-1].time_usec
        together = [
            entry for entry in together if (entry.time_usec >= horizon if newest else entry.time_usec <= horizon)
        ]
    merged.more = merged.more or result.more or len(together) > request.limit
    merged.entries, cut = _fit(together[: request.limit], max_bytes)
    merged.capped = merged.capped or capped or cut


def _fit(entries: list[JournalEntry], max_bytes: int) -> tuple[list[JournalEntry], bool]:
    """The first entries whose output fits `max_bytes`, and whether any were left out."""
    total = 0
    for n, entry in enumerate(entries):
        total += query_journal.line_bytes(entry)
        if total > max_bytes:
            return entries[:n], True
    return entries, False


def _named(note: str, names: list[str], source: str) -> str:
    """A worker note with the file it names by position named by its path."""
    found = FILE_NOTE.match(note)
    if found is None or not 1 <= int(found.group(1)) <= len(names):
        return f"{source}: {note}"
    return f"{source}: {os.path.basename(names[int(found.group(1)) - 1])} " + note[found.end() :]


def _truncation(merged: Merged, target: SearchTarget, request: JournalRequest) -> str | None:
    """Why the answer is incomplete. Unlike query_logs' files, a journal's unsearched files
    may hold entries earlier (or later) than every one returned: once time ran out, the
    lines are not the source's first max_lines, and saying max_lines would claim they are."""
    if merged.capped:
        return "max_output_bytes"
    if merged.timed_out:
        return "timeout_s"
    if merged.more and not request.count_only:
        return "max_lines"
    if target.left_out:
        return "max_glob_files"
    return None


def _coverage_notes(target: SearchTarget, merged: Merged, max_files: int) -> list[str]:
    notes = []
    if target.left_out:
        notes.append(
            f"{len(target.left_out)} older journal file(s) of {target.log_path} not searched "
            f"(more than max_glob_files = {max_files})"
        )
    if merged.timed_out:
        notes.append(f"{len(merged.timed_out)} journal file(s) not searched: timeout_s reached")
    for skipped in target.skipped[:MAX_NOTES]:
        notes.append(f"{os.path.basename(skipped.path)} skipped: it {skipped.reason}")
    return notes


def _reply(ctx: CallContext, target: SearchTarget, request: JournalRequest, merged: Merged) -> types.CallToolResult:
    limits = ctx.policy.limits
    reason = _truncation(merged, target, request)
    notes = merged.notes[:MAX_NOTES] + _coverage_notes(target, merged, limits.max_glob_files)
    counts = dict(merged.counts) if request.count_only else None
    reply = query_journal.result(target.log_path, merged.entries, counts, merged.files, reason, notes)
    _record(ctx, target, merged, len(merged.entries), reason, reply)
    return reply


def _record(
    ctx: CallContext, target: SearchTarget, merged: Merged, lines: int, reason: str | None, reply: types.CallToolResult
) -> None:
    record = ctx.record
    record.reply = "ok" if reason != "max_output_bytes" else "output_capped"
    record.search = SearchEnd(
        files=merged.files, workers=merged.workers, lines=lines, truncated_reason=reason, bytes=merged.bytes_received
    )
    text = reply.content[0].text if reply.content and isinstance(reply.content[0], types.TextContent) else ""
    record.result_preview = preview(text)
    if merged.workers > 1:
        record.earlier_workers_cpu_s = round(merged.earlier_cpu_s, 4)
    if target.skipped or target.left_out or merged.timed_out:
        record.coverage = Coverage(
            files_skipped=len(target.skipped),
            files_left_out=len(target.left_out),
            files_timed_out=len(merged.timed_out),
            skipped=[f"{file.path}: {file.reason}" for file in target.skipped[:AUDIT_SKIPPED]],
        )
