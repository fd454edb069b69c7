"""Signed checkpoints of the audit chain (Ed25519), so a cut or recomputed tail shows.

The hash chain alone is unkeyed: whoever can write the file can cut its last
records, or rewrite them and recompute every hash after. A checkpoint is a
record the server writes every `checkpoint_every` records or
`checkpoint_interval_s` seconds (and at stop): it names the seq and hash of the
record just before it, signed with a key only the server can read. The same
checkpoint goes to stderr (journald under systemd) as one line, so a copy lives
outside the file.

What it proves, with the public key: every record up to the last valid
checkpoint is as the server wrote it (changing one breaks the chain to a
signature nobody else can make); records after it are reported as unsealed;
a tail cut before a checkpoint kept elsewhere (`audit verify --checkpoint`)
is detected. What it cannot: records after the last checkpoint can still be
cut without trace when no copy of a later one exists, and whoever can read the
private key (root on the server's host) can sign anything: keep the key on the
server only, and the checkpoints from the journal on another host.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import stat
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.audit.log import CHECKPOINT

EVENT = CHECKPOINT
TOKEN_PREFIX = "bastion-checkpoint:v1"
MAX_KEY_FILE_BYTES = 4096


class CheckpointKeyError(Exception):
    """A checkpoint key file is missing, unsafe or not an Ed25519 key."""


def _message(seq: int, head: str) -> bytes:
    """What is signed: a domain-separated statement of one point in the chain."""
    return f"{TOKEN_PREFIX}\n{seq}\n{head}\n".encode("ascii")


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    seq: int  # the sealed record's seq
    head: str  # its hash (sha256 of its line)
    key_id: str
    signature: str  # base64url, no padding

    def token(self) -> str:
        """The one-line form for the journal and for `audit verify --checkpoint`."""
        return f"{TOKEN_PREFIX}:{self.key_id}:{self.seq}:{self.head}:{self.signature}"

    def fields(self) -> dict[str, object]:
        return {"sealed_seq": self.seq, "sealed_head": self.head, "key_id": self.key_id, "signature": self.signature}

    def valid(self, public: Ed25519PublicKey) -> bool:
        try:
            signature = base64.urlsafe_b64decode(self.signature + "=" * (-len(self.signature) % 4))
            public.verify(signature, _message(self.seq, self.head))
        except (InvalidSignature, ValueError, binascii.Error):
            return False
        return self.key_id == key_id(public)


def parse_token(text: str) -> Checkpoint:
    """A checkpoint from its token; ValueError if it is not one."""
    parts = text.strip().rsplit(":", 4)
    if len(parts) != 5 or parts[0] != TOKEN_PREFIX or not parts[2].isdigit() or len(parts[3]) != 64:
        raise ValueError(f"not a checkpoint ({TOKEN_PREFIX}:KEY_ID:SEQ:HEAD:SIGNATURE)")
    return Checkpoint(seq=int(parts[2]), head=parts[3], key_id=parts[1], signature=parts[4])


def from_record(record: dict[str, object]) -> Checkpoint | None:
    seq, head, kid, signature = (record.get(name) for name in ("sealed_seq", "sealed_head", "key_id", "signature"))
    if type(seq) is not int or not all(isinstance(value, str) for value in (head, kid, signature)):
        return None
    return Checkpoint(seq, str(head), str(kid), str(signature))


class Signer:
    """The server's side: signs checkpoints with the private key it alone can read."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.key_id = key_id(private.public_key())

    def sign(self, seq: int, head: str) -> Checkpoint:
        signature = base64.urlsafe_b64encode(self._private.sign(_message(seq, head))).rstrip(b"=").decode()
        return Checkpoint(seq, head, self.key_id, signature)


def _read_own_file(path: str, private: bool) -> bytes:
    """A key file's bytes through a no-follow open; a private key must be ours and 0600."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        reason = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise CheckpointKeyError(f"cannot open checkpoint key {path}: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointKeyError(f"checkpoint key {path} is not a regular file")
        if private and info.st_uid != os.geteuid():
            raise CheckpointKeyError(f"checkpoint key {path} is owned by uid {info.st_uid}, not this server's")
        if private and info.st_mode & 0o077:
            raise CheckpointKeyError(f"checkpoint key {path} is readable by others (mode {info.st_mode & 0o777:o})")
        return os.read(fd, MAX_KEY_FILE_BYTES + 1)[: MAX_KEY_FILE_BYTES + 1]
    finally:
        os.close(fd)


def load_signer(path: str) -> Signer:
    data = _read_own_file(path, private=True)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CheckpointKeyError(f"checkpoint key {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointKeyError(f"checkpoint key {path} is not an Ed25519 key")
    return Signer(key)


def load_public_key(path: str) -> Ed25519PublicKey:
    data = _read_own_file(path, private=False)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise CheckpointKeyError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointKeyError(f"{path} is not an Ed25519 public key")
    return key


def generate(private_path: str) -> tuple[str, str]:
    """Write a new key pair: PRIVATE (0600, never overwritten) and PRIVATE.pub; return
    the public key's path and id."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_path = private_path + ".pub"
    _write_new(private_path, pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except OSError:
        os.unlink(private_path)
        raise
    return public_path, key_id(private.public_key())


def _write_new(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, "short write")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
