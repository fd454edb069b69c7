"""A symlink planted in a log directory never makes the broker serve another file.

Whoever can write a log's directory (on a host: the service that owns it) may plant
or swap symlinks, hard links, FIFOs and directories there at any moment. Unit tests
cover the no-follow open (openat2, and the walk used where the kernel lacks it) and
the Allowlist; end-to-end tests plant and swap links while a real `bastion serve`
answers query_logs, resources/* and prompts/get over stdio. tests/test_rootless.py
runs this file again with the broker as uid 65534.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from broker.errors import ToolError
from broker.files import no_follow_open
from broker.files.allowlist import HARD_LINKED, NOT_ALLOWED, NOT_REGULAR, Allowlist
from broker.files.no_follow_open import open_beneath, open_by_walk
from broker.policy import PolicyError, load_policy
from broker.tools.resources import log_uri
from tests.conftest import BASTION, bastion_client, own_descriptors_only, write_policy

MARKER = f"SECRET-{uuid.uuid4().hex}"  # in files outside the allowlist only
SYMLINK = "is a symlink or lies behind one, and symlinks are never followed"
SWAPS_MAX = 20_000
SWAP_SECONDS_MAX = 60.0


# --- where the attacks happen ---------------------------------------------------


@pytest.fixture(params=["openat2", "walk"])
def kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with openat2, and again as on a kernel without it (< 5.6)."""
    if request.param == "walk":

        def no_openat2(*_args: object) -> int:
            raise OSError(errno.ENOSYS, "Function not implemented")

        monkeypatch.setattr(no_follow_open, "openat2", no_openat2)
    return str(request.param)


class Site:
    """tmp_path/secret (outside the allowlist) and three allowlisted places:
    logs/app.log with rotations, glob/*.log and remote/*/auth.log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.secret_dir = root / "secret"
        self.secret_dir.mkdir()
        self.shadow = self.secret_dir / "shadow"
        for name in ("shadow", "app.log", "app.log.1", "a.log", "auth.log"):
            (self.secret_dir / name).write_text(f"root:{MARKER}:19000:0:99999:7:::\n")
        self.logs = root / "logs"
        self.glob = root / "glob"
        self.host = root / "remote" / "web1"
        for directory in (self.logs, self.glob, self.host):
            directory.mkdir(parents=True)
        self.app = self.logs / "app.log"
        self.app.write_text("ordinary app line\n")
        (self.logs / "app.log.1").write_text("ordinary rotated line\n")
        (self.glob / "a.log").write_text("ordinary glob line\n")
        (self.host / "auth.log").write_text("ordinary remote line\n")
        self.conf = root / "conf"
        self.conf.mkdir()

    def entries(self) -> list[Any]:
        return [
            {"path": str(self.app), "rotations": True},
            self.glob / "*.log",
            self.root / "remote" / "*" / "auth.log",
        ]

    def policy(self, extra: list[Any] | None = None) -> Path:
        # Rate limits high enough for the swap loop's calls.
        return write_policy(
            self.conf, [*self.entries(), *(extra or [])], toml="[rate_limit]\ncalls = 10000\nglobal_calls = 100000\n"
        )

    def allowlist(self, extra: list[Any] | None = None) -> Allowlist:
        return Allowlist(load_policy(self.policy(extra)))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


@pytest.fixture
def allowlist(site: Site) -> Iterator[Allowlist]:
    allowlist = site.allowlist()
    yield allowlist
    allowlist.close()


def plant_link(link: Path, target: Path) -> None:
    """Atomically replace `link` (whatever it is) by a symlink to `target`."""
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex}")
    temporary.symlink_to(target)
    os.replace(temporary, link)


def served(allowlist: Allowlist, path: Path | str) -> str:
    """What open() hands over for `path`: the file's text, or the refusal."""
    try:
        _, fd = allowlist.open(str(path))
    except ToolError as exc:
        return f"refused: {exc.message}"
    with os.fdopen(fd, "rb") as file:
        return file.read().decode()


def searched(allowlist: Allowlist, path: Path | str) -> dict[str, str]:
    """What open_search() covers for `path`: {path as the client names it: text}."""
    target = allowlist.open_search(str(path))
    try:
        return {log.path: os.read(log.fd, 1 << 16).decode() for log in target.files}
    finally:
        target.close()


# --- the no-follow open ---------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[int]:
    """A directory descriptor of tmp_path/base: f (a file), sub/g, a FIFO, and links."""
    base = tmp_path / "base"
    (base / "sub").mkdir(parents=True)
    (base / "f").write_text("file\n")
    (base / "sub" / "g").write_text("nested\n")
    (tmp_path / "outside").write_text(MARKER)
    os.mkfifo(base / "fifo")
    (base / "link").symlink_to(base / "f")
    (base / "dangling").symlink_to(base / "nowhere")
    (base / "sublink").symlink_to(base / "sub")
    fd = os.open(base, os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def read_all(fd: int) -> str:
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def open_error(opener: Callable[[int, str, int], int], dirfd: int, path: str, flags: int = os.O_RDONLY) -> int | None:
    try:
        os.close(opener(dirfd, path, flags))
    except OSError as exc:
        return exc.errno
    return None


OPENERS = pytest.mark.parametrize("opener", [open_beneath, open_by_walk], ids=["openat2", "walk"])


@OPENERS
def test_plain_names_open_close_on_exec(tree: int, opener: Callable[[int, str, int], int]) -> None:
    assert read_all(opener(tree, "f", os.O_RDONLY)) == "file\n"
    fd = opener(tree, "sub/g", os.O_RDONLY)
    assert os.get_inheritable(fd) is False
    assert read_all(fd) == "nested\n"


@OPENERS
@pytest.mark.parametrize("path", ["link", "dangling", "sublink/g", "sublink"])
def test_a_symlink_anywhere_is_eloop(tree: int, opener: Callable[[int, str, int], int], path: str) -> None:
    assert open_error(opener, tree, path) == errno.ELOOP
    assert open_error(opener, tree, path, os.O_PATH) == errno.ELOOP  # O_PATH|O_NOFOLLOW would open the link itself
    assert open_error(opener, tree, path, os.O_RDONLY | os.O_DIRECTORY) == errno.ELOOP  # not ENOTDIR


@OPENERS
def test_a_file_in_the_middle_of_a_path_is_enotdir(tree: int, opener: Callable[[int, str, int], int]) -> None:
    assert open_error(opener, tree, "f/x") == errno.ENOTDIR


@OPENERS
@pytest.mark.parametrize("path", ["../outside", "sub/../../outside", "/etc/passwd"])
def test_leaving_the_directory_is_exdev(tree: int, opener: Callable[[int, str, int], int], path: str) -> None:
    assert open_error(opener, tree, path) == errno.EXDEV


@OPENERS
def test_magic_links_in_proc_are_refused(tmp_path: Path, opener: Callable[[int, str, int], int]) -> None:
    secret = os.open(tmp_path / "outside", os.O_RDONLY | os.O_CREAT, 0o600)
    proc = os.open("/proc/self", os.O_PATH | os.O_DIRECTORY)
    try:
        assert open_error(opener, proc, f"fd/{secret}") == errno.ELOOP
        assert open_error(opener, proc, f"root{tmp_path}/outside") == errno.ELOOP
        assert open_error(opener, proc, "cwd") == errno.ELOOP
    finally:
        os.close(proc)
        os.close(secret)


@OPENERS
def test_a_fifo_opens_without_blocking_and_a_directory_as_itself(
    tree: int, opener: Callable[[int, str, int], int]
) -> None:
    """The wrapper resolves names; the Allowlist's fstat is what refuses them (below)."""
    fifo = opener(tree, "fifo", os.O_RDONLY | os.O_NONBLOCK)
    directory = opener(tree, "sub", os.O_RDONLY)
    try:
        assert stat.S_ISFIFO(os.fstat(fifo).st_mode) and stat.S_ISDIR(os.fstat(directory).st_mode)
    finally:
        os.close(fifo)
        os.close(directory)


def test_without_openat2_the_walk_is_used(tree: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def no_openat2(*_args: object) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    def spy(dirfd: int, path: str, flags: int) -> int:
        calls.append(path)
        return open_by_walk(dirfd, path, flags)

    monkeypatch.setattr(no_follow_open, "openat2", no_openat2)
    monkeypatch.setattr(no_follow_open, "open_by_walk", spy)
    assert read_all(open_beneath(tree, "sub/g", os.O_RDONLY)) == "nested\n"
    assert open_error(open_beneath, tree, "sublink/g") == errno.ELOOP
    assert calls == ["sub/g", "sublink/g"]


@pytest.mark.parametrize("code", [errno.EPERM, errno.EINVAL])
def test_other_openat2_failures_never_fall_back(tree: int, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """A seccomp filter's EPERM, say, is a refusal: fail closed, not a reason to try another way."""

    def failing(*_args: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(no_follow_open, "openat2", failing)
    monkeypatch.setattr(no_follow_open, "open_by_walk", lambda *_: pytest.fail("fell back"))
    assert open_error(open_beneath, tree, "f") == code


def test_eagain_is_retried_a_bounded_number_of_times(tree: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def racing(*_args: object) -> int:
        calls.append(1)
        raise OSError(errno.EAGAIN, "retry")

    monkeypatch.setattr(no_follow_open, "openat2", racing)
    assert open_error(open_beneath, tree, "f") == errno.EAGAIN
    assert len(calls) == no_follow_open.EAGAIN_RETRIES


def test_openat2_is_really_used_on_this_kernel(tree: int) -> None:
    """Otherwise the 'openat2' runs above would silently test the walk twice."""
    fd = no_follow_open.openat2(tree, "f", os.O_RDONLY, no_follow_open.NO_FOLLOW_BENEATH)
    assert read_all(fd) == "file\n"


# --- the Allowlist, with links planted after load -------------------------------


def test_literal_log_replaced_by_a_symlink(site: Site, allowlist: Allowlist, kernel: str) -> None:
    plant_link(site.app, site.shadow)
    assert served(allowlist, site.app) == f"refused: log_path is allowlisted but {SYMLINK}"
    # As one file of the log's set it is skipped, with its reason; its rotation still answers.
    assert searched(allowlist, site.app) == {str(site.logs / "app.log.1"): "ordinary rotated line\n"}
    target = allowlist.open_search(str(site.app))
    target.close()
    assert [(skip.path, skip.reason) for skip in target.skipped] == [(str(site.app), SYMLINK)]
    (site.logs / "app.log.1").unlink()
    with pytest.raises(ToolError, match=SYMLINK):  # nothing left to search: refused, saying why
        searched(allowlist, site.app)
    assert str(site.app) not in {log.path for log in allowlist.logs()}


def test_rotation_replaced_by_a_symlink(site: Site, allowlist: Allowlist, kernel: str) -> None:
    plant_link(site.logs / "app.log.1", site.shadow)
    plant_link(site.logs / "app.log.2.gz", site.shadow)
    assert searched(allowlist, site.app) == {str(site.app): "ordinary app line\n"}
    assert SYMLINK in served(allowlist, site.logs / "app.log.1")
    assert SYMLINK in served(allowlist, site.logs / "app.log.2.gz")


@pytest.mark.parametrize("target", ["shadow", "app"], ids=["outside", "to_an_allowlisted_file"])
def test_glob_member_that_is_a_symlink(site: Site, allowlist: Allowlist, kernel: str, target: str) -> None:
    evil = site.glob / "evil.log"
    evil.symlink_to(site.shadow if target == "shadow" else site.app)
    assert served(allowlist, evil) == f"refused: log_path is allowlisted but {SYMLINK}"
    assert searched(allowlist, site.glob / "*.log") == {str(site.glob / "a.log"): "ordinary glob line\n"}
    assert str(evil) not in {log.path for log in allowlist.logs()}


def test_glob_directory_that_is_a_symlink(site: Site, allowlist: Allowlist, kernel: str) -> None:
    (site.root / "remote" / "evil").symlink_to(site.secret_dir)
    assert SYMLINK in served(allowlist, site.root / "remote" / "evil" / "auth.log")
    assert searched(allowlist, site.root / "remote" / "*" / "auth.log") == {
        str(site.host / "auth.log"): "ordinary remote line\n"
    }


@pytest.mark.parametrize("replacement", ["symlink", "directory"])
@pytest.mark.parametrize("which", ["logs", "glob", "remote"])
def test_a_directory_swapped_after_load_gains_nothing(
    site: Site, allowlist: Allowlist, kernel: str, replacement: str, which: str
) -> None:
    """The directory pinned at load is the one served from, wherever it has been renamed to."""
    directory = site.root / which
    os.rename(directory, site.root / f"{which}.moved")
    if replacement == "symlink":
        directory.symlink_to(site.secret_dir if which != "remote" else site.root)
    else:
        directory.mkdir()
        for name in ("app.log", "app.log.1", "a.log", "web1"):
            (directory / name).write_text(MARKER) if name != "web1" else (directory / name).mkdir()
        (directory / "web1" / "auth.log").write_text(MARKER)
    texts = [
        served(allowlist, site.app),
        served(allowlist, site.glob / "a.log"),
        served(allowlist, site.host / "auth.log"),
    ]
    texts += [*searched(allowlist, site.app).values(), *searched(allowlist, site.glob / "*.log").values()]
    texts += searched(allowlist, site.root / "remote" / "*" / "auth.log").values()
    assert not [text for text in texts if MARKER in text]
    assert texts[:3] == ["ordinary app line\n", "ordinary glob line\n", "ordinary remote line\n"]
    # The directory's new name is not allowlisted, however the broker still reaches it.
    # (a hint may follow, naming policy entries only: never the name the directory moved to)
    refused = served(allowlist, site.root / f"{which}.moved" / "a.log")
    assert refused.startswith(f"refused: {NOT_ALLOWED}") and f"{which}.moved" not in refused


def test_only_regular_files_with_one_name_are_served(site: Site, allowlist: Allowlist, kernel: str) -> None:
    """A hard link: where fs.protected_hardlinks is off, a service user could link /etc/shadow
    into its log directory. A FIFO or directory: refused without blocking on the FIFO."""
    os.link(site.shadow, site.glob / "hard.log")
    os.link(site.shadow, site.logs / "app.log.2")
    os.mkfifo(site.glob / "pipe.log")
    (site.glob / "dir.log").mkdir()
    os.unlink(site.app)
    os.mkfifo(site.app)
    assert served(allowlist, site.glob / "hard.log") == f"refused: log_path is allowlisted but {HARD_LINKED}"
    for path in (site.glob / "pipe.log", site.glob / "dir.log", site.app):
        assert served(allowlist, path) == f"refused: log_path is allowlisted but {NOT_REGULAR}"
    assert searched(allowlist, site.glob / "*.log") == {str(site.glob / "a.log"): "ordinary glob line\n"}
    assert {log.path for log in allowlist.logs()} == {str(site.glob / "a.log"), str(site.host / "auth.log")}
    os.unlink(site.app)
    site.app.write_text("ordinary app line\n")
    assert searched(allowlist, site.app) == {
        str(site.logs / "app.log.1"): "ordinary rotated line\n",
        str(site.app): "ordinary app line\n",
    }


# --- the Allowlist at load --------------------------------------------------------


def test_a_literal_entry_that_is_a_symlink_is_refused_at_load(site: Site) -> None:
    link = site.logs / "link.log"
    link.symlink_to(site.app)
    with pytest.raises(PolicyError) as raised:
        site.allowlist([link])
    assert str(raised.value).startswith(f"logs[3].path: {link} is a symlink; ")
    assert "follow_symlinks = true" in str(raised.value)


@pytest.mark.parametrize("entry", ["alias/app.log", "alias/*.log", "alias/deeper/*/x.log"])
def test_a_symlinked_directory_on_the_path_is_refused_at_load(site: Site, entry: str) -> None:
    (site.root / "alias").symlink_to(site.logs)
    with pytest.raises(PolicyError) as raised:
        site.allowlist([site.root / entry])
    assert str(raised.value).startswith(
        f"logs[3].path: {site.root / 'alias'} is a symlink, on the path of {site.root / entry}; "
    )


def test_serve_refuses_a_symlinked_entry_before_anything_starts(site: Site) -> None:
    link = site.logs / "link.log"
    link.symlink_to(site.shadow)
    served = subprocess.run(
        [str(BASTION), "serve", "--policy", str(site.policy([link]))],
        capture_output=True,
        timeout=60,
        input=b"",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert served.returncode == 2 and served.stdout == b""
    assert f"policy error: logs[3].path: {link} is a symlink; ".encode() in served.stderr
    assert b"serving" not in served.stderr


def test_follow_symlinks_pins_the_target_once(site: Site, kernel: str) -> None:
    """The link is followed at load; re-pointing it afterwards changes nothing, and the
    pinned target is then opened without following links like any other."""
    link = site.root / "current.log"
    link.symlink_to(site.app)
    allowlist = site.allowlist([{"path": str(link), "follow_symlinks": True, "rotations": True}])
    try:
        assert served(allowlist, link) == "ordinary app line\n"
        assert searched(allowlist, link) == {
            str(site.root / "current.log.1"): "ordinary rotated line\n",
            str(link): "ordinary app line\n",
        }
        plant_link(link, site.shadow)
        assert served(allowlist, link) == "ordinary app line\n"
        plant_link(site.app, site.shadow)
        assert SYMLINK in served(allowlist, link)
    finally:
        allowlist.close()


def test_an_entry_whose_directory_is_missing_at_load_is_inert(site: Site) -> None:
    later = site.root / "later" / "x.log"
    allowlist = site.allowlist([later])
    try:
        (note,) = allowlist.notes()
        assert note.startswith(f"{later}: not served until a restart: ")
        later.parent.mkdir()
        later.write_text("x\n")
        assert "does not exist" in served(allowlist, later)
        assert str(later) not in {log.path for log in allowlist.logs()}
    finally:
        allowlist.close()


def test_directory_descriptors_are_opened_once_and_closed_with_the_allowlist(site: Site) -> None:
    with own_descriptors_only():
        gc.collect()  # earlier tests' unreferenced allowlists close theirs now, not midway
        before = set(os.listdir("/proc/self/fd"))
        allowlist = site.allowlist()
        pinned = set(os.listdir("/proc/self/fd")) - before
        assert len(pinned) == 3
        for _ in range(3):
            served(allowlist, site.app)
            searched(allowlist, site.glob / "*.log")
            allowlist.logs()
        assert set(os.listdir("/proc/self/fd")) - before == pinned
        allowlist.close()
        assert set(os.listdir("/proc/self/fd")) <= before


# --- end to end over stdio ---------------------------------------------------------

pytest_e2e = pytest.mark.anyio


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content) + str(result.structured_content or "")


async def _everything_a_client_sees(client: Any, site: Site, extra_paths: list[Path]) -> list[str]:
    """Every tool result, resource listing and read, and prompt a client can get at."""
    seen = []
    for path in [
        site.app,
        site.logs / "app.log.1",
        site.glob / "*.log",
        site.root / "remote" / "*" / "auth.log",
        *extra_paths,
    ]:
        result = await client.call_tool("query_logs", {"log_path": str(path), "pattern": "ordinary|root|SECRET"})
        seen.append(_text(result))
    resources = (await client.list_resources()).resources
    seen.append(" ".join(str(resource.uri) for resource in resources))
    for uri in {str(resource.uri) for resource in resources} | {
        log_uri(str(path)) for path in [site.app, *extra_paths]
    }:
        try:
            seen += [content.text for content in (await client.read_resource(uri)).contents]
        except MCPError as exc:
            seen.append(f"refused: {exc.error.message}")
    for path in [None, *extra_paths]:
        try:
            prompt = await client.get_prompt("triage_auth_failures", {} if path is None else {"log_path": str(path)})
            seen += [message.content.text for message in prompt.messages]
        except MCPError as exc:
            seen.append(f"refused: {exc.error.message}")
    return seen


@pytest_e2e
async def test_planted_links_are_never_served_end_to_end(site: Site) -> None:
    planted = [site.glob / "evil.log", site.glob / "auth.log", site.root / "remote" / "evil" / "auth.log"]
    async with bastion_client(site.policy()) as client:
        plant_link(site.app, site.shadow)  # after start: a symlinked entry would not even load
        plant_link(site.logs / "app.log.1", site.shadow)
        (site.glob / "evil.log").symlink_to(site.shadow)
        (site.glob / "auth.log").symlink_to(site.shadow)  # the prompt's default choice, were it listed
        (site.root / "remote" / "evil").symlink_to(site.secret_dir)
        seen = await _everything_a_client_sees(client, site, planted)
    leaked = [text for text in seen if MARKER in text]
    assert leaked == []
    assert any("ordinary glob line" in text for text in seen) and any("ordinary remote line" in text for text in seen)
    assert not [text for text in seen if text.startswith("refused") and str(site.root) in text]
    assert sum(SYMLINK in text for text in seen) >= 3
    # The prompt's default auth log is the real one, not the planted glob/auth.log.
    assert any(f"Triage authentication failures in {site.host / 'auth.log'}." in text for text in seen)


class Swapper(threading.Thread):
    """Swaps logs/app.log between a regular file and a symlink to the secret, and glob/
    between the real directory and a symlink to the secret one, until told to stop
    (bounded in count and time)."""

    def __init__(self, site: Site) -> None:
        super().__init__(daemon=True)
        self.site, self.stop, self.swaps = site, threading.Event(), 0

    def run(self) -> None:
        site, deadline = self.site, time.monotonic() + SWAP_SECONDS_MAX
        moved = site.root / "glob.moved"
        while not self.stop.is_set() and self.swaps < SWAPS_MAX and time.monotonic() < deadline:
            plant_link(site.app, site.shadow)
            os.rename(site.glob, moved)
            site.glob.symlink_to(site.secret_dir)
            time.sleep(0.0005)
            fresh = site.logs / ".app.new"
            fresh.write_text("ordinary app line\n")
            os.replace(fresh, site.app)
            site.glob.unlink()
            os.rename(moved, site.glob)
            time.sleep(0.0005)
            self.swaps += 1


@pytest_e2e
async def test_links_swapped_in_while_calls_run_are_never_served_end_to_end(site: Site) -> None:
    rounds, deadline, done = 25, time.monotonic() + 90, 0
    seen: list[str] = []
    async with bastion_client(site.policy()) as client:
        swapper = Swapper(site)
        swapper.start()
        try:
            for _ in range(rounds):
                if time.monotonic() > deadline:
                    break
                for path in (site.app, site.glob / "*.log", site.glob / "a.log"):
                    seen.append(
                        _text(await client.call_tool("query_logs", {"log_path": str(path), "pattern": "ordinary|root"}))
                    )
                try:
                    seen += [content.text for content in (await client.read_resource(log_uri(str(site.app)))).contents]
                except MCPError as exc:
                    seen.append(f"refused: {exc.error.message}")
                done += 1
        finally:
            swapper.stop.set()
            swapper.join(timeout=10)
    assert done > 0 and not swapper.is_alive() and swapper.swaps > done  # the race really ran
    assert [text for text in seen if MARKER in text] == []
    assert sum("ordinary app line" in text for text in seen) > 0  # and served the real file between swaps
    assert [text for text in seen if "ordinary" not in text and SYMLINK not in text] == []  # nothing else went wrong
    assert sum("ordinary glob line" in text for text in seen) == 2 * done
