"""The allowlist: path text checks, glob matching, symlinks (never followed) and how files are opened.

Attacks with symlinks swapped in while a server runs are in tests/test_symlink_attacks.py."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from broker.errors import ToolError
from broker.files.allowlist import CLOSEST_HINT, NOT_ALLOWED, AllowedLog, Allowlist
from broker.files.log_path_text import MAX_PATH_BYTES, check_path_text
from broker.policy import Policy, PolicyError, parse_policy
from tests.conftest import own_descriptors_only, write_policy


def make_allowlist(directory: Path, logs: list[str | Path | dict[str, object]], **limits: int) -> Allowlist:
    policy_file = write_policy(directory, logs, **limits)
    policy: Policy = parse_policy(policy_file.read_bytes(), directory)
    return Allowlist(policy)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """allowed/ (glob *.log), exact.log (exact entry) and outside/ (not allowlisted)."""
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    conf = tmp_path / "conf"
    conf.mkdir()
    (allowed / "a.log").write_bytes(b"alpha\n")
    (allowed / "b.log").write_bytes(b"beta\n")
    (allowed / "a.txt").write_bytes(b"text\n")
    (allowed / "sub" / "a.log").write_bytes(b"nested\n")
    (outside / "secret.log").write_bytes(b"secret\n")
    exact = tmp_path / "exact.log"
    exact.write_bytes(b"exact\n")
    return {"root": tmp_path, "allowed": allowed, "outside": outside, "conf": conf, "exact": exact}


@pytest.fixture
def allowlist(tree: dict[str, Path]) -> Allowlist:
    return make_allowlist(tree["conf"], [tree["allowed"] / "*.log", tree["exact"]])


# --- check_path_text ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (None, "non-empty string"),
        (42, "non-empty string"),
        (b"/var/log/auth.log", "non-empty string"),
        (["/var/log/auth.log"], "non-empty string"),
        ("", "non-empty string"),
        ("var/log/auth.log", "absolute"),
        ("./auth.log", "absolute"),
        ("~/auth.log", "absolute"),
        ("/var/log/../log/auth.log", "normalized"),
        ("/var/log/..", "normalized"),
        ("/var/./log/auth.log", "normalized"),
        ("/var/log/.", "normalized"),
        ("/var//log/auth.log", "normalized"),
        ("//var/log/auth.log", "normalized"),
        ("///var/log/auth.log", "normalized"),
        ("/var/log/", "normalized"),
        ("/var/log/auth.log\x00", "control"),
        ("/var/log/\x00/auth.log", "control"),
        ("/var/log/auth\n.log", "control"),
        ("/var/log/\x1b[31m.log", "control"),
        ("/var/log/a\x7f.log", "control"),
        ("/var/log/a\x85.log", "control"),
        ("/var/log/a\x9f.log", "control"),
        ("/var/log/a\t.log", "control"),
        ("/" + "a" * MAX_PATH_BYTES, "longer than"),
        ("/" + "é" * (MAX_PATH_BYTES // 2), "longer than"),
        ("/var/log/\ud800.log", "not valid Unicode"),
        ("/var/log/\udcff", "not valid Unicode"),
    ],
)
def test_check_path_text_refuses(value: object, needle: str) -> None:
    with pytest.raises(ToolError) as raised:
        check_path_text(value)
    assert needle in raised.value.message
    assert raised.value.message.startswith("log_path ")
    assert raised.value.outcome == "invalid"


@pytest.mark.parametrize(
    "value",
    [
        "/",
        "/var/log/auth.log",
        "/var/log/app-1.2_x.log",
        "/var/log/日本.log",
        "/" + "a" * (MAX_PATH_BYTES - 1),
        "/var/log/*.log",
    ],
)
def test_check_path_text_accepts(value: str) -> None:
    assert check_path_text(value) == value


def test_check_path_text_uses_given_name() -> None:
    with pytest.raises(ToolError, match="^uri must be an absolute path"):
        check_path_text("x", name="uri")


# --- Allowlist.open ----------------------------------------------------------


def assert_read_only_fd(fd: int, content: bytes) -> None:
    try:
        assert stat.S_ISREG(os.fstat(fd).st_mode)
        assert os.read(fd, 1024) == content
        with pytest.raises(OSError) as raised:
            os.write(fd, b"x")
        assert raised.value.errno == errno.EBADF
        assert os.get_inheritable(fd) is False
        assert os.get_blocking(fd) is True
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("name", "content"), [("allowed/a.log", b"alpha\n"), ("allowed/b.log", b"beta\n"), ("exact.log", b"exact\n")]
)
def test_open_allowed(tree: dict[str, Path], allowlist: Allowlist, name: str, content: bytes) -> None:
    path = str(tree["root"] / name)
    returned, fd = allowlist.open(path)
    assert returned == path
    assert_read_only_fd(fd, content)


def refused_message(allowlist: Allowlist, path: str) -> str:
    """The refusal without its hint, once the hint is checked to name policy entries only."""
    with pytest.raises(ToolError) as raised:
        allowlist.open(path)
    message, _, hint = raised.value.message.partition(CLOSEST_HINT)
    entries = {pinned.entry.path for pinned in allowlist.pinned}
    assert all(name in entries for name in hint.split(", ") if hint), hint
    return message


def test_refusal_names_the_closest_entries_only(tree: dict[str, Path], allowlist: Allowlist) -> None:
    with pytest.raises(ToolError) as raised:
        allowlist.open(str(tree["root"] / "exact.lg"))
    assert raised.value.message == f"{NOT_ALLOWED}{CLOSEST_HINT}{tree['exact']}"
    # Nothing on disk is offered: b.log exists in the glob's directory but is no entry,
    # and a path like no entry gets no hint at all.
    with pytest.raises(ToolError) as raised:
        allowlist.open(str(tree["allowed"] / "b.lg"))
    assert str(tree["allowed"] / "b.log") not in raised.value.message
    with pytest.raises(ToolError) as raised:
        allowlist.open("/etc/shadow")
    assert raised.value.message == NOT_ALLOWED


def test_refusal_names_the_likely_file_not_every_neighbour(tmp_path: Path) -> None:
    """Entries in one directory share a long prefix: the file names decide."""
    names = ["auth.log", "kern.log", "messages", "daemon.log"]
    allowlist = make_allowlist(tmp_path, [tmp_path / "logs" / name for name in names])
    for wrong, expected in [
        (tmp_path / "logs" / "auth.lgo", [tmp_path / "logs" / "auth.log"]),  # a typo in the name
        (tmp_path / "log" / "messages", [tmp_path / "logs" / "messages"]),  # the wrong directory
        (tmp_path / "logs" / "secure", []),  # like nothing allowlisted
    ]:
        with pytest.raises(ToolError) as raised:
            allowlist.open(str(wrong))
        hint = raised.value.message.partition(CLOSEST_HINT)[2]
        assert (hint.split(", ") if hint else []) == [str(path) for path in expected], hint


def test_refusal_names_a_glob_its_file_would_match(tmp_path: Path) -> None:
    allowlist = make_allowlist(tmp_path, [tmp_path / "nginx" / "*.log", tmp_path / "remote" / "*" / "auth.log"])
    for wrong, expected in [
        (tmp_path / "ngnix" / "access.log", tmp_path / "nginx" / "*.log"),
        (tmp_path / "remote" / "web1" / "auth.lg", tmp_path / "remote" / "*" / "auth.log"),
    ]:
        with pytest.raises(ToolError) as raised:
            allowlist.open(str(wrong))
        assert raised.value.message.partition(CLOSEST_HINT)[2].split(", ")[0] == str(expected)


def test_refusal_names_at_most_three_entries(tmp_path: Path) -> None:
    logs = [tmp_path / f"host{n}.log" for n in range(8)]
    allowlist = make_allowlist(tmp_path, logs)
    with pytest.raises(ToolError) as raised:
        allowlist.open(str(tmp_path / "host1.lgo"))
    named = raised.value.message.partition(CLOSEST_HINT)[2].split(", ")
    assert len(named) == 3 and named[0] == str(logs[1])
    # A huge path is compared by its start only, and answered at once.
    with pytest.raises(ToolError, match="not an allowlisted log"):
        allowlist.open(str(tmp_path / ("x" * 4000)))


@pytest.mark.parametrize(
    "name",
    [
        "allowed/sub/a.log",  # glob matches one segment only
        "allowed/a.txt",
        "allowed/a.log.bak",
        "allowed",
        "outside/secret.log",
        "exact.log.1",
        "conf/policy.toml",
        "conf/audit.jsonl",
    ],
)
def test_open_not_allowlisted(tree: dict[str, Path], allowlist: Allowlist, name: str) -> None:
    message = refused_message(allowlist, str(tree["root"] / name))
    assert message == NOT_ALLOWED
    assert str(tree["root"]) not in message


@pytest.mark.parametrize("path", ["/etc/shadow", "/proc/self/environ", "/"])
def test_open_system_paths_refused(allowlist: Allowlist, path: str) -> None:
    assert refused_message(allowlist, path) == NOT_ALLOWED


def test_open_uses_name_in_message(tree: dict[str, Path], allowlist: Allowlist) -> None:
    with pytest.raises(ToolError, match="^uri is not an allowlisted log"):
        allowlist.open(str(tree["outside"] / "secret.log"), name="uri")


SYMLINK = "is a symlink or lies behind one, and symlinks are never followed"


@pytest.mark.parametrize(
    "target",
    ["outside/secret.log", "allowed/a.txt", "allowed/sub/a.log", "conf", "exact.log", "allowed/b.log", "nowhere.log"],
    ids=["other_dir", "same_dir_not_matching", "subdir", "directory", "allowlisted_file", "glob_member", "dangling"],
)
def test_symlink_in_glob_folder_is_refused_whatever_it_points_to(
    tree: dict[str, Path], allowlist: Allowlist, target: str
) -> None:
    """Even a link to a file the policy names is refused: the broker never follows one at request time."""
    link = tree["allowed"] / "evil.log"
    link.symlink_to(tree["root"] / target)
    message = refused_message(allowlist, str(link))
    assert message == f"log_path is allowlisted but {SYMLINK}"
    assert str(tree["root"]) not in message
    assert str(link) not in {log.path for log in allowlist.logs()}


def test_symlink_to_path_outside_tmp_refused(
    tree: dict[str, Path], allowlist: Allowlist, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "x.log"
    elsewhere.write_bytes(b"x\n")
    link = tree["allowed"] / "link.log"
    link.symlink_to(elsewhere)
    message = refused_message(allowlist, str(link))
    assert SYMLINK in message
    assert str(elsewhere.parent) not in message and str(tree["root"]) not in message


def test_relative_symlink_to_allowlisted_file_refused(tree: dict[str, Path], allowlist: Allowlist) -> None:
    link = tree["allowed"] / "rel.log"
    link.symlink_to("../exact.log")
    assert SYMLINK in refused_message(allowlist, str(link))


def test_symlinked_directory_matched_by_glob_segment_is_refused(tree: dict[str, Path], tmp_path: Path) -> None:
    """root/*/x.log: a directory symlink matched by the '*' segment is neither listed nor opened."""
    (tmp_path / "apps" / "real").mkdir(parents=True)
    (tmp_path / "apps" / "real" / "x.log").write_bytes(b"real\n")
    (tree["outside"] / "x.log").write_bytes(b"outside\n")
    (tmp_path / "apps" / "evil").symlink_to(tree["outside"])
    allowlist = make_allowlist(tree["conf"], [tmp_path / "apps" / "*" / "x.log"])
    assert [log.path for log in allowlist.logs()] == [str(tmp_path / "apps" / "real" / "x.log")]
    message = refused_message(allowlist, str(tmp_path / "apps" / "evil" / "x.log"))
    assert SYMLINK in message and str(tmp_path) not in message
    _, fd = allowlist.open(str(tmp_path / "apps" / "real" / "x.log"))
    assert_read_only_fd(fd, b"real\n")
    opened = allowlist.open_search(str(tmp_path / "apps" / "*" / "x.log"))
    assert [log.path for log in opened.files] == [str(tmp_path / "apps" / "real" / "x.log")]
    opened.close()


def test_symlinked_literal_prefix_in_policy_is_refused_at_load(tree: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(tree["outside"])
    with pytest.raises(PolicyError) as raised:
        make_allowlist(tree["conf"], [tree["exact"], tmp_path / "alias" / "*.log"])
    message = str(raised.value)
    assert message.startswith(
        f"logs[1].path: {tmp_path / 'alias'} is a symlink, on the path of {tmp_path / 'alias' / '*.log'}"
    )
    assert "follow_symlinks = true" in message


def test_symlinked_literal_prefix_is_followed_once_with_follow_symlinks(tree: dict[str, Path], tmp_path: Path) -> None:
    """follow_symlinks: the prefix is resolved at load and that directory pinned; pointing the
    link elsewhere afterwards changes nothing."""
    (tmp_path / "alias").symlink_to(tree["outside"])
    allowlist = make_allowlist(tree["conf"], [{"path": str(tmp_path / "alias" / "*.log"), "follow_symlinks": True}])
    assert [log.path for log in allowlist.logs()] == [str(tmp_path / "alias" / "secret.log")]
    _, fd = allowlist.open(str(tmp_path / "alias" / "secret.log"))
    assert_read_only_fd(fd, b"secret\n")
    # ... the target directory itself is still not nameable directly,
    assert refused_message(allowlist, str(tree["outside"] / "secret.log")) == NOT_ALLOWED
    # ... and re-pointing the link does not move the pinned directory.
    (tmp_path / "alias").unlink()
    (tmp_path / "alias").symlink_to(tree["allowed"])
    assert [log.path for log in allowlist.logs()] == [str(tmp_path / "alias" / "secret.log")]
    assert "does not exist" in refused_message(allowlist, str(tmp_path / "alias" / "a.log"))


@pytest.mark.parametrize("kind", ["directory", "fifo", "directory_via_glob"])
def test_non_regular_allowlisted_refused(tree: dict[str, Path], kind: str) -> None:
    target = tree["root"] / "special.log"
    if kind == "fifo":
        os.mkfifo(target)
        entry: Path = target
    elif kind == "directory":
        target.mkdir()
        entry = target
    else:
        target.mkdir()
        entry = tree["root"] / "*.log"
    allowlist = make_allowlist(tree["conf"], [entry])
    message = refused_message(allowlist, str(target))  # must not block on the FIFO
    assert "not a regular file" in message
    assert str(tree["root"]) not in message


def test_fifo_open_does_not_leak_fd(tree: dict[str, Path]) -> None:
    fifo = tree["root"] / "pipe.log"
    os.mkfifo(fifo)
    allowlist = make_allowlist(tree["conf"], [fifo])
    with own_descriptors_only():
        before = set(os.listdir("/proc/self/fd"))
        for _ in range(5):
            with pytest.raises(ToolError):
                allowlist.open(str(fifo))
        assert set(os.listdir("/proc/self/fd")) <= before


@pytest.mark.parametrize("name", ["allowed/missing.log", "gone.log"])
def test_nonexistent_allowlisted_refused(tree: dict[str, Path], name: str) -> None:
    allowlist = make_allowlist(tree["conf"], [tree["allowed"] / "*.log", tree["root"] / "gone.log"])
    message = refused_message(allowlist, str(tree["root"] / name))
    assert "does not exist" in message
    assert str(tree["root"]) not in message


@pytest.mark.parametrize(
    "bad",
    [
        "{root}/allowed/../exact.log",
        "{root}/allowed/./a.log",
        "{root}/allowed//a.log",
        "allowed/a.log",
        "{root}/allowed/a.log\x00",
    ],
)
def test_open_rejects_bad_text_before_filesystem(tree: dict[str, Path], allowlist: Allowlist, bad: str) -> None:
    message = refused_message(allowlist, bad.format(root=tree["root"]))
    assert str(tree["root"]) not in message


# --- Allowlist.logs ----------------------------------------------------------


def test_logs_lists_existing_regular_files_only(tree: dict[str, Path]) -> None:
    (tree["allowed"] / "dir.log").mkdir()
    os.mkfifo(tree["allowed"] / "pipe.log")
    (tree["allowed"] / "out.log").symlink_to(tree["outside"] / "secret.log")
    (tree["allowed"] / "in.log").symlink_to(tree["exact"])
    (tree["allowed"] / "dangling.log").symlink_to(tree["root"] / "nowhere")
    allowlist = make_allowlist(tree["conf"], [tree["allowed"] / "*.log", tree["exact"], tree["root"] / "missing.log"])
    listed = [log.path for log in allowlist.logs()]
    allowed = tree["allowed"]
    assert listed == [
        str(allowed / "a.log"),
        str(allowed / "b.log"),
        str(tree["exact"]),
    ]  # no symlink, even to exact.log


def test_logs_deduplicates_and_keeps_first_description(tree: dict[str, Path]) -> None:
    policy_file = tree["conf"] / "policy.toml"
    policy_file.write_text(
        f'[[logs]]\npath = "{tree["exact"]}"\ndescription = "first"\n'
        f'[[logs]]\npath = "{tree["root"]}/*.log"\ndescription = "glob"\n'
        f'[audit]\npath = "{tree["conf"]}/audit.jsonl"\n'
    )
    allowlist = Allowlist(parse_policy(policy_file.read_bytes(), tree["conf"]))
    assert allowlist.logs() == [AllowedLog(str(tree["exact"]), "first")]


@pytest.mark.parametrize(("limit", "expected"), [(1, 1), (3, 3), (10, 10), (25, 12)])
def test_logs_respects_max_glob_files(tmp_path: Path, limit: int, expected: int) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(12):
        (folder / f"{index:02d}.log").write_bytes(b"x\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    allowlist = make_allowlist(conf, [folder / "*.log"], max_glob_files=limit)
    listed = [log.path for log in allowlist.logs()]
    assert listed == [str(folder / f"{index:02d}.log") for index in range(expected)]
    # The listing bound does not change what may be opened.
    _, fd = allowlist.open(str(folder / "11.log"))
    os.close(fd)


def test_logs_ignores_files_that_vanish(tree: dict[str, Path], allowlist: Allowlist) -> None:
    before = {log.path for log in allowlist.logs()}
    (tree["allowed"] / "a.log").unlink()
    after = {log.path for log in allowlist.logs()}
    assert before - after == {str(tree["allowed"] / "a.log")}


def accepted_by_open(allowlist: Allowlist, path: Path) -> bool:
    try:
        _, fd = allowlist.open(str(path))
    except ToolError:
        return False
    os.close(fd)
    return True


@pytest.mark.parametrize("name", ["a.log", "b.log"])
def test_logs_and_open_agree_on_plain_names(tree: dict[str, Path], allowlist: Allowlist, name: str) -> None:
    listed = {log.path for log in allowlist.logs()}
    assert accepted_by_open(allowlist, tree["allowed"] / name)
    assert str(tree["allowed"] / name) in listed


def test_logs_and_open_agree_on_dot_files(tree: dict[str, Path], allowlist: Allowlist) -> None:
    hidden = tree["allowed"] / ".hidden.log"
    hidden.write_bytes(b"hidden\n")
    listed = str(hidden) in {log.path for log in allowlist.logs()}
    assert accepted_by_open(allowlist, hidden) == listed


def _rotated_41(tmp_path: Path, **limits: int) -> Allowlist:
    log = tmp_path / "auth.log"
    log.write_text("live\n")
    for n in range(1, 41):
        (tmp_path / f"auth.log.{n}{'.gz' if n > 1 else ''}").write_bytes(b"x")
    (tmp_path / "auth.log.old").write_text("not a rotation name\n")
    policy = write_policy(tmp_path, [{"path": str(log), "rotations": True}], **limits)
    return Allowlist(parse_policy(policy.read_bytes(), tmp_path))


def test_a_search_over_many_rotations_covers_them_all_one_descriptor_batch_at_a_time(tmp_path: Path) -> None:
    """One worker takes at most 32 descriptors: 40 rotations and the live file are two batches,
    oldest first, the live file last; only one batch is open at a time."""
    from bastion_wire.protocol import MAX_SEARCH_FILES

    opened = _rotated_41(tmp_path).open_search(str(tmp_path / "auth.log"))
    try:
        first = [Path(f.path).name for f in opened.files]
        assert len(first) == MAX_SEARCH_FILES == 32 and first[0] == "auth.log.40.gz" and opened.chosen == 41
        assert [f.gzip for f in opened.files[:2]] == [True, True] and opened.left_out == []
        opened.close()
        _rotated_41(tmp_path).open_next(opened)
        second = [Path(f.path).name for f in opened.files]
        assert second[-2:] == ["auth.log.1", "auth.log"] and len(second) == 9 and not opened.files[-1].gzip
        assert not opened.pending and not opened.skipped
    finally:
        opened.close()


def test_rotations_beyond_max_glob_files_are_left_out_oldest_first(tmp_path: Path) -> None:
    opened = _rotated_41(tmp_path, max_glob_files=10).open_search(str(tmp_path / "auth.log"), newest_first=True)
    try:
        assert [Path(f.path).name for f in opened.files][:2] == ["auth.log", "auth.log.1"] and len(opened.files) == 10
        assert [Path(p).name for p in opened.left_out][:2] == ["auth.log.40.gz", "auth.log.39.gz"] and len(
            opened.left_out
        ) == 31
    finally:
        opened.close()


# --- what list_logs and completions see ----------------------------------------------


def test_covered_lists_an_entrys_files_newest_first(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "web").mkdir(parents=True)
    for name, mtime in [
        ("auth.log", 30),
        ("auth.log.1", 20),
        ("auth.log.2.gz", 10),
        ("web/a.log", 5),
        ("web/b.log", 7),
    ]:
        (logs / name).write_bytes(b"x" * mtime)
        os.utime(logs / name, (mtime, mtime))
    allowlist = make_allowlist(tmp_path, [{"path": str(logs / "auth.log"), "rotations": True}, logs / "web" / "*.log"])
    rotated, glob = allowlist.pinned
    assert allowlist.covered(rotated) == [str(logs / name) for name in ("auth.log", "auth.log.1", "auth.log.2.gz")]
    assert allowlist.covered(glob) == [str(logs / "web" / "b.log"), str(logs / "web" / "a.log")]
    facts = allowlist.facts(str(logs / "auth.log.2.gz"))
    assert facts is not None and (facts.size, facts.mtime, facts.compressed) == (10, 10, True)


def test_facts_never_follow_a_link_nor_describe_what_is_not_served(tree: dict[str, Path], allowlist: Allowlist) -> None:
    """facts() opens as a search does: a link planted after the listing shows nothing of its target."""
    (tree["allowed"] / "evil.log").symlink_to(tree["outside"] / "secret.log")
    os.link(tree["outside"] / "secret.log", tree["allowed"] / "twice.log")
    assert allowlist.facts(str(tree["allowed"] / "evil.log")) is None
    assert allowlist.facts(str(tree["allowed"] / "twice.log")) is None
    assert allowlist.facts(str(tree["outside"] / "secret.log")) is None  # not allowlisted
    assert allowlist.facts(str(tree["allowed"] / "gone.log")) is None
    facts = allowlist.facts(str(tree["exact"]))
    assert facts is not None and facts.size == len(b"exact\n") and facts.compressed is False
