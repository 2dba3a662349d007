"""API keys: only hashes are stored, verification, revocation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select, update

from framepack_server.jobs.db import Database
from framepack_server.jobs.keys import KeyStore, hash_key
from framepack_server.jobs.tables import ApiKeyRow


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "keys.sqlite"


@pytest.fixture
def db(path):
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


def test_a_key_is_shown_once_and_stored_as_its_hash(db, path):
    keys = KeyStore(db)
    assert keys.has_keys() is False
    plaintext, info = keys.create_key("ci")
    assert plaintext.startswith("fp_") and len(plaintext) == 43 and info.prefix == plaintext[:8]
    assert info.name == "ci" and info.revoked_at is None and info.created_at.tzinfo is not None
    with db.session(write=False) as session:
        row = session.scalars(select(ApiKeyRow)).one()
    assert row.key_hash == hashlib.sha256(plaintext.encode()).hexdigest() == hash_key(plaintext)
    db.dispose()  # closing checkpoints the WAL; read the database and any -wal / -shm file left
    stored = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
    assert plaintext.encode() not in stored and plaintext[8:].encode() not in stored
    assert keys.has_keys() is True


def test_verify_and_revoke(db):
    keys = KeyStore(db)
    first, first_info = keys.create_key("one")
    second, second_info = keys.create_key("two")
    assert first != second
    assert keys.verify_key(first) == first_info.id and keys.verify_key(second) == second_info.id
    assert keys.verify_key(first + "x") is None and keys.verify_key("") is None and keys.verify_key(first[:-1]) is None

    assert keys.revoke_key(first_info.prefix) is True
    assert keys.verify_key(first) is None and keys.verify_key(second) == second_info.id
    assert keys.revoke_key(first_info.id) is False  # already revoked
    assert keys.revoke_key("fp_nothing") is False
    assert keys.revoke_key(second) is True  # the plaintext works too
    listed = keys.list_keys()
    assert [k.id for k in listed] == [first_info.id, second_info.id] and all(k.revoked for k in listed)
    assert keys.has_keys() is True and keys.has_keys(active_only=True) is False


def test_an_ambiguous_prefix_revokes_nothing(db):
    keys = KeyStore(db)
    _, a = keys.create_key("a")
    _, b = keys.create_key("b")
    with db.session() as session:
        session.execute(update(ApiKeyRow).values(prefix="fp_same0"))
    with pytest.raises(ValueError, match="matches 2 keys"):
        keys.revoke_key("fp_same0")
    assert keys.revoke_key(b.id) is True and not keys.list_keys()[0].revoked
