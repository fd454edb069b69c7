"""The policy checks `bastion serve` makes before it serves, shared with `bastion doctor`.

Both commands call check() on the same policy, so doctor cannot say "can be
served" where serve refuses, or the other way round. A finding either refuses
(serve exits without serving; doctor's verdict is "refuses") or warns (serve
logs it at start-up and serves; doctor prints it). Nothing here writes: the
audit log is probed for append without being created, files are opened
read-only. The sandbox layers are probed separately (doctor starts real
workers, serve starts its pool); layer_fix() says what to change for a layer
that cannot be applied.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import stat
from dataclasses import dataclass

from broker.audit.log_file import wait_for_append_lock
from broker.errors import ToolError
from broker.files import log_dir_modes
from broker.files.allowlist import Allowlist
from broker.files.output_dir import directory_problem
from broker.files.regular_file import open_regular
from broker.policy import Intel, Policy
from broker.sandbox.profile import load_profile

TAIL_BYTES = 1 << 16  # a record is far shorter; enough to find the last one


@dataclass(frozen=True)
class Finding:
    subject: str  # the policy key it is about, e.g. "audit.path" or "logs[2].path"
    message: str
    refuses: bool  # True: bastion serve refuses to start


class PreflightRefusal(Exception):
    """The policy cannot be served; the message is the first refusing finding."""


def check(policy: Policy, profiles_dir: str | None = None, allowlist: Allowlist | None = None) -> list[Finding]:
    """Every finding for `policy`; its logs are checked as `allowlist` pinned them
    (built here when not given: PolicyError for a symlink on an entry's path)."""
    own = allowlist is None
    allowlist = Allowlist(policy) if allowlist is None else allowlist
    try:
        findings = [
            *_audit(policy.audit.path, policy.state_root),
            *_checkpoint_key(policy.audit.checkpoint_key),
            *_engine(policy, profiles_dir),
            *_logs(allowlist),
            *_log_modes(policy, allowlist),
            *_journals(allowlist),
        ]
    finally:
        if own:
            allowlist.close()
    if policy.intel is not None:
        findings += _intel(policy.intel)
    return findings


def refusals(findings: list[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.refuses]


def enforce(findings: list[Finding]) -> list[Finding]:
    """serve's use: raise on the first refusal; return the warnings to log."""
    refused = refusals(findings)
    if refused:
        raise PreflightRefusal(f"{refused[0].subject}: {refused[0].message}")
    return findings


# --- audit log ---------------------------------------------------------------------


def _audit(path: str, state_root: str) -> list[Finding]:
    problem = _audit_problem(path, state_root)
    return [Finding("audit.path", problem, True)] if problem else []


def _checkpoint_key(path: str) -> list[Finding]:
    """A configured checkpoint key must be usable: serve would refuse to start without it."""
    if not path:
        return []
    from broker.audit.checkpoint import CheckpointKeyError, load_signer  # cryptography only when configured

    try:
        load_signer(path)
    except CheckpointKeyError as exc:
        return [Finding("audit.checkpoint_key", str(exc), True)]
    return []


def _audit_problem(path: str, state_root: str) -> str:
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        problem = directory_problem(path, state_root or None)
        return f"cannot create audit log {path}: {problem}" if problem else ""
    except OSError as exc:
        return f"cannot open audit log {path}: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return f"cannot open audit log {path}: it is a symbolic link (never followed)"
    if not stat.S_ISREG(info.st_mode):
        return f"cannot open audit log {path}: not a regular file"
    if info.st_uid != os.geteuid():
        return (
            f"cannot open audit log {path}: it is owned by uid {info.st_uid}, not by this server's uid {os.geteuid()}"
        )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open audit log {path} for append: {exc.strerror}"
    try:
        # Servers share the file, each holding its lock for one append; a lock held for
        # seconds is a stuck process, and serve would refuse every call.
        wait_for_append_lock(fd)  # released by the close below
    except OSError as exc:
        return f"cannot write audit log {path}: {exc.strerror}"
    finally:
        os.close(fd)
    return _tail_problem(path)


def _tail_problem(path: str) -> str:
    """serve continues the hash chain from the last record: it must be whole."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            tail = file.read()
    except OSError as exc:
        return f"cannot read audit log {path}: {exc.strerror}"
    if not tail:
        return ""
    if not tail.endswith(b"\n"):
        return (
            f"audit log {path} ends with an incomplete record; inspect it with `bastion audit verify`"
            " and repair it before serving"
        )
    try:
        int(json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])["seq"])
    except (ValueError, KeyError, TypeError):
        return f"audit log {path} does not end with a Bastion record"
    return ""


# --- search engine -------------------------------------------------------------------


def _engine(policy: Policy, profiles_dir: str | None) -> list[Finding]:
    if policy.search.engine != "rg":
        return []
    profile = load_profile("grep", profiles_dir)
    present = [*profile.executables, *(path for path in profile.optional_executables if os.access(path, os.X_OK))]
    if any(os.path.basename(path) == "rg" for path in present):
        return []
    return [Finding("search.engine", '[search] engine = "rg", but ripgrep is not installed (/usr/bin/rg)', True)]


# --- allowlisted logs (a missing log is an error per call, not a refusal) --------------


def _logs(allowlist: Allowlist) -> list[Finding]:
    """Each entry's files opened exactly as a call opens them (beneath the pinned
    directory, no symlink followed)."""
    findings = []
    for index, pinned in enumerate(allowlist.pinned):
        key, entry = f"logs[{index}].path", pinned.entry
        if pinned.dirfd is None:
            findings.append(Finding(key, f"{entry.path}: not served until a restart: {pinned.problem}", False))
            continue
        names = allowlist.files(pinned)
        if not names:
            missing = "matches no file right now" if entry.is_glob else "does not exist right now"
            findings.append(Finding(key, f"{entry.path} {missing}; calls on it fail until one exists", False))
        for name in names[:64]:  # a glob's first files are enough to show a permission problem
            problem = _unopenable(allowlist, os.path.join(pinned.shown, name))
            if problem:
                findings.append(Finding(key, f"{problem}; calls on it fail until that changes", False))
    return findings


def _journals(allowlist: Allowlist) -> list[Finding]:
    """Each [[journals]] source: served now, with files; and the journal library the
    journal workers load (without it no journal worker can start: refuse to serve)."""
    journals = allowlist.journals
    if not journals.sources:
        return []
    findings = []
    if ctypes.util.find_library("systemd") is None:
        findings.append(Finding("journals", "libsystemd.so.0 is missing (Debian package libsystemd0)", True))
    for index, (name, pinned) in enumerate(journals.sources.items()):
        key = f"journals[{index}].path"
        if pinned.problem:
            findings.append(Finding(key, f"{name}: not served until a restart: {pinned.problem}", False))
        elif not journals.covered(pinned):
            findings.append(
                Finding(key, f"{name}: no journal file there right now; calls on it fail until one is", False)
            )
    return findings


def _unopenable(allowlist: Allowlist, path: str) -> str:
    try:
        _, fd = allowlist.open(path)
    except ToolError as exc:
        return exc.message.replace("log_path", path, 1)
    os.close(fd)
    return ""


def _log_modes(policy: Policy, allowlist: Allowlist) -> list[Finding]:
    """Who besides root can change a log (broker/files/log_dir_modes.py): refuses under strict_modes."""
    strict = policy.sandbox.strict_modes
    consequence = (
        "[sandbox] strict_modes = true refuses to serve this"
        if strict
        else "a warning; [sandbox] strict_modes = true would refuse"
    )
    return [
        Finding("allowlisted log", f"{line} ({consequence})", strict)
        for line in log_dir_modes.report(log_dir_modes.find(allowlist))
    ]


def _unreadable(path: str, follow_symlinks: bool = True) -> str:
    """Opened as serve opens it (broker/files/regular_file.py): never blocking, regular files only."""
    try:
        os.close(open_regular(path, follow_symlinks))
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be opened: {exc.strerror}"
    return ""


# --- threat intel (missing files make check_ip_reputation fail, not the server) -------


def _intel(intel: Intel) -> list[Finding]:
    findings = []
    database = _unreadable(intel.database, follow_symlinks=False)  # the server writes it: a link was planted
    if database:
        hint = " (run `bastion intel compile --policy FILE`)" if not os.path.exists(intel.database) else ""
        findings.append(
            Finding("intel.database", f"{database}{hint}: check_ip_reputation fails until it can be read", False)
        )
    for key in ("asn_mmdb", "country_mmdb"):
        path = getattr(intel, key)
        problem = _unreadable(path) if path else ""
        if problem:
            findings.append(
                Finding(f"intel.{key}", f"{problem}: check_ip_reputation answers without that enrichment", False)
            )
    return findings


# --- what to do about a layer that cannot be applied -----------------------------------


def layer_fix(layer: str, reason: str, root: bool) -> str:
    downgrade = f'add `best_effort = ["{layer}"]` to [sandbox] (workers then run without it)'
    if layer == "cgroup" and not root:
        return f"{downgrade}, or run as root"
    if layer == "cgroup":
        return f"mount cgroup v2 (or v1 memory and pids) with those controllers enabled, or {downgrade}"
    if layer == "seccomp" and "unknown syscall" in reason:
        return "correct the profile's [seccomp] lists (names as in `ausyscall --dump`)"
    if layer == "seccomp":
        return "reinstall Bastion with its dependencies (PyPI pyseccomp) and make sure libseccomp2 is installed"
    if layer == "landlock":
        return f"boot a kernel >= 5.13 with landlock in its lsm= list, or {downgrade}"
    if layer in ("namespaces", "filesystem") and not root:
        return (
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu also "
            f"kernel.apparmor_restrict_unprivileged_userns=0), or run as root, or {downgrade}"
        )
    return f"fix the cause above, or {downgrade}"
