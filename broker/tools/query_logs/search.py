"""The query_logs call: open the log's files, search them one batch of up to 32 files per
worker (broker/tools/query_logs/batches.py), one batch after the other in one slot, and
shape the reply. Everything the call learns goes to its record (broker/call_record.py).
"""

from __future__ import annotations

import os
import time

import mcp_types as types

from bastion_wire.protocol import SearchRequest
from broker.call_record import Coverage, SearchEnd, preview
from broker.errors import ToolError
from broker.files.allowlist import OpenedLog, SearchTarget
from broker.pool.outcome import engine_stopped, raise_for
from broker.pool.worker_process import Worker, WorkerResult
from broker.sandbox import cgroup
from broker.tools.context import CallContext
from broker.tools.query_logs import engine as search_engine
from broker.tools.query_logs import notes as search_notes
from broker.tools.query_logs import tool as query_logs
from broker.tools.query_logs.batches import Progress, absorb, batch_request
from broker.tools.query_logs.ere import Node
from broker.tools.query_logs.scan_progress import ScanProgress

MAX_NOTES = 10  # worker notes (truncated gzip, decompression cap) passed on to the client
AUDIT_SKIPPED = 50  # skipped files the end record names (with why)


async def run(args: query_logs.QueryArgs, ctx: CallContext) -> types.CallToolResult:
    limits = ctx.policy.limits
    target = ctx.allowlist.open_search(args.log_path, newest_first=args.newest_first)
    try:
        base = SearchRequest(
            pattern=args.pattern,
            max_lines=args.max_lines,
            max_line_bytes=limits.max_line_bytes,
            files=[],
            ignore_case=args.ignore_case,
            context=args.context,
            count_only=args.count_only,
            newest_first=args.newest_first,
            since=args.since,
            until=args.until,
            max_decompressed_bytes=limits.max_decompressed_bytes,
        )
        async with ctx.slot():  # one slot for every batch of the call
            progress = await _search(ctx, target, base, args.pattern_tree)
    finally:
        target.close()
    return _reply(ctx, target, base, progress)


async def _search(ctx: CallContext, target: SearchTarget, base: SearchRequest, tree: Node) -> Progress:
    """Every batch of the target, one worker each, until done or a call-wide limit is spent."""
    limits = ctx.policy.limits
    record = ctx.record
    deadline = time.monotonic() + limits.timeout_s  # for the whole call, not per batch
    progress = Progress()
    record.bytes_scanned = 0
    scan = ScanProgress(ctx.progress, target.chosen) if ctx.progress is not None else None
    while True:
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            progress.timed_out = [log.path for log in target.files] + list(target.pending)
            break
        request = batch_request(base, target.files, progress)
        sizes = [os.fstat(log.fd).st_size for log in target.files]
        if scan is not None:
            scan.start_batch(sizes, target.pending_bytes())
        request = search_engine.choose(request, tree, ctx.policy.search.engine, ctx.ripgrep, sizes)
        progress.engines.update(search_engine.engines(request).split("+"))
        record.engine = "+".join(sorted(progress.engines))
        last = not target.pending
        result, worker = await ctx.run_worker(
            "grep",
            request,
            [log.fd for log in target.files],
            left_s,
            limits.max_output_bytes - progress.bytes_received,
            scan.worker if scan is not None else None,
        )
        progress.workers += 1
        progress.bytes_received += result.bytes_received
        record.bytes_scanned += sum(os.lseek(log.fd, 0, os.SEEK_CUR) for log in target.files)
        if result.outcome == "timeout" and progress.paths:  # earlier batches answered: keep them
            progress.timed_out = [log.path for log in target.files] + list(target.pending)
            break
        raise_for(result, limits.timeout_s, _memory_limit_if_crashed(ctx, result))
        failed = _engine_deaths(result, worker, target.files)
        notes = [
            search_notes.worker_note(target.log_path, note, [log.path for log in target.files])
            for note in result.notes[:MAX_NOTES]
        ]
        absorb(progress, target.files, result, failed, notes)
        # A worker's last frames can arrive with its Done, past its byte budget: spent is spent.
        progress.capped = progress.capped or progress.bytes_received >= limits.max_output_bytes
        target.close()
        if progress.stopped(base) or last:
            break
        if scan is not None:
            await scan.batch_done()
        await ctx.stop_early(worker, result)
        progress.earlier_cpu_s += result.cpu_s
        ctx.allowlist.open_next(target)
        if not target.files:
            break
    return progress


def _memory_limit_if_crashed(ctx: CallContext, result: WorkerResult) -> int | None:
    """The grep workers' memory cap, asked for only when a crash may have been that limit."""
    crashed = result.outcome == "worker_crashed" and result.peak_memory_kb is not None
    return ctx.pool.memory_limit("grep") if crashed else None


def _engine_deaths(result: WorkerResult, worker: Worker, files: list[OpenedLog]) -> dict[int, str]:
    """The batch's files whose engine died, with the limit that killed it if one did.
    Asked while the worker still lives: its cgroup counts the memory limit's kills."""
    if not result.skipped:
        return {}
    oom = bool(cgroup.oom_kills(worker.cgroup_dirs))  # the OOM killer's signal is SIGKILL
    limit = cgroup.memory_limit(worker.cgroup_dirs)
    return {
        skip.file: engine_stopped(skip.cause, oom and skip.cause == "SIGKILL", limit)
        for skip in result.skipped[: len(files)]
        if skip.file < len(files)
    }


def _reply(ctx: CallContext, target: SearchTarget, request: SearchRequest, progress: Progress) -> types.CallToolResult:
    limits = ctx.policy.limits
    if progress.failed and len(progress.failed) == len(progress.paths) and not progress.lines:
        failed = progress.failed[0]
        raise ToolError(
            f"the search stopped: {search_notes.shown(target.log_path, failed.path)}: {failed.reason}",
            "limit_exceeded",
        )
    lines, cut = query_logs.cap_lines(progress.lines, limits.max_output_bytes)
    reason = search_notes.truncation(progress, cut, target, request)
    notes = progress.notes[:MAX_NOTES] + search_notes.coverage(target, progress, request, limits)
    _record_reply(ctx, target, progress, len(lines), reason, "\n".join(line.text for line in lines))
    counts = progress.counts if request.count_only else None
    return query_logs.result(target.log_path, progress.paths, progress.compressed, lines, counts, reason, notes)


def _record_reply(
    ctx: CallContext, target: SearchTarget, progress: Progress, lines: int, reason: str | None, text: str
) -> None:
    record = ctx.record
    record.reply = "ok" if reason != "max_output_bytes" else "output_capped"
    record.search = SearchEnd(
        files=len(progress.paths),
        workers=progress.workers,
        lines=lines,
        truncated_reason=reason,
        bytes=progress.bytes_received,
    )
    record.result_preview = preview(text)
    if progress.workers > 1:
        record.earlier_workers_cpu_s = round(progress.earlier_cpu_s, 4)
    if target.skipped or progress.failed or target.left_out or progress.timed_out:
        not_searched = target.skipped + progress.failed
        record.coverage = Coverage(
            files_skipped=len(not_searched),
            files_left_out=len(target.left_out),
            files_timed_out=len(progress.timed_out),
            skipped=[f"{file.path}: {file.reason}" for file in not_searched[:AUDIT_SKIPPED]],
        )
