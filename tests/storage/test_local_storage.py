"""LocalStorage: round trips, atomic writes, and keys that try to leave the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framepack_server.storage import LocalStorage, Storage, validate_key


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "root")


def all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_is_a_storage(store: LocalStorage) -> None:
    assert isinstance(store, Storage)


def test_bytes_round_trip(store: LocalStorage) -> None:
    store.put_bytes("outputs/job1.mp4", b"video", content_type="video/mp4")
    assert store.exists("outputs/job1.mp4")
    assert store.get_bytes("outputs/job1.mp4") == b"video"
    assert store.size("outputs/job1.mp4") == 5
    assert store.local_path("outputs/job1.mp4") == store.root / "outputs" / "job1.mp4"
    store.put_bytes("outputs/job1.mp4", b"newer")
    assert store.get_bytes("outputs/job1.mp4") == b"newer"


def test_file_round_trip_leaves_source(store: LocalStorage, tmp_path: Path) -> None:
    src = tmp_path / "work" / "out.mp4"
    src.parent.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 7)
    src.write_bytes(data)
    store.put_file("outputs/deep/er/job2.mp4", src, content_type="video/mp4")
    assert store.get_bytes("outputs/deep/er/job2.mp4") == data
    assert store.size("outputs/deep/er/job2.mp4") == len(data)
    assert src.read_bytes() == data


def test_missing_objects(store: LocalStorage) -> None:
    assert not store.exists("outputs/none.mp4")
    assert store.size("outputs/none.mp4") is None
    with pytest.raises(FileNotFoundError):
        store.get_bytes("outputs/none.mp4")
    store.delete("outputs/none.mp4")  # no error


def test_delete(store: LocalStorage) -> None:
    store.put_bytes("a/b.txt", b"x")
    store.delete("a/b.txt")
    assert not store.exists("a/b.txt")
    store.delete("a/b.txt")


def test_atomic_put_leaves_no_temp_files(store: LocalStorage, tmp_path: Path) -> None:
    store.put_bytes("outputs/a.bin", b"a")
    src = tmp_path / "src.bin"
    src.write_bytes(b"b" * 1000)
    store.put_file("outputs/b.bin", src)
    assert all_files(store.root) == ["outputs/a.bin", "outputs/b.bin"]


def test_failed_put_keeps_old_object_and_no_temp(store: LocalStorage, tmp_path: Path) -> None:
    store.put_bytes("outputs/a.bin", b"old")
    with pytest.raises(FileNotFoundError):
        store.put_file("outputs/a.bin", tmp_path / "missing.bin")

    class Exploding:
        def __bytes__(self) -> bytes:
            raise RuntimeError

    with pytest.raises(TypeError):
        store.put_bytes("outputs/a.bin", Exploding())  # type: ignore[arg-type]
    assert store.get_bytes("outputs/a.bin") == b"old"
    assert all_files(store.root) == ["outputs/a.bin"]


def test_written_through_temp_then_replace(store: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """The final name only ever appears through os.replace of a sibling temp file."""
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        calls.append((str(src), str(dst)))
        assert Path(src).parent == Path(dst).parent
        assert not Path(dst).exists()
        assert Path(src).read_bytes() == b"payload"
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    store.put_bytes("outputs/c.bin", b"payload")
    assert len(calls) == 1
    assert calls[0][1] == str(store.root / "outputs" / "c.bin")


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x", "a/../../x", "a/..", "./a", "a//b", "a/", "a\\b", "..\\x", "a/./b", "a\x00b"],
)
def test_bad_keys_refused(store: LocalStorage, key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)
    for call in (store.exists, store.get_bytes, store.delete, store.local_path, store.size):
        with pytest.raises(ValueError):
            call(key)
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")


def test_symlink_out_of_root_refused(store: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError):
        store.put_bytes("link/x.bin", b"x")
    assert not (outside / "x.bin").exists()


def test_good_keys_accepted() -> None:
    for key in ["a", "outputs/job.mp4", "a/b/c.d", "x..y/.hidden", "uploads/2024-01-01/f name.png"]:
        assert validate_key(key) == key


def test_delete_prunes_the_folders_it_empties_but_not_the_root(tmp_path):
    store = LocalStorage(tmp_path / "root")
    store.put_bytes("checkpoints/job/a.bin", b"a")
    store.put_bytes("checkpoints/job/b.bin", b"b")
    store.put_bytes("checkpoints/other/c.bin", b"c")
    store.delete("checkpoints/job/a.bin")
    assert (tmp_path / "root" / "checkpoints" / "job").is_dir()  # b.bin is still there
    store.delete("checkpoints/job/b.bin")
    assert not (tmp_path / "root" / "checkpoints" / "job").exists()
    assert (tmp_path / "root" / "checkpoints" / "other" / "c.bin").exists()
    store.delete("checkpoints/other/c.bin")
    assert not (tmp_path / "root" / "checkpoints").exists() and (tmp_path / "root").is_dir()
    store.put_bytes("checkpoints/job/a.bin", b"again")  # the folders come back when written to
    assert store.get_bytes("checkpoints/job/a.bin") == b"again"
