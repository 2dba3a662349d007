"""Upload records."""

from __future__ import annotations

from framepack_server.jobs.db import Database
from framepack_server.jobs.uploads import UploadStore


def test_create_get_and_complete_an_upload(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'u.sqlite'}")
    uploads = UploadStore(db)
    made = uploads.create_upload("k", "uploads/abc/cat.png", "cat.png", "image/png")
    assert made.size is None and made.completed is False and made.created_at.tzinfo is not None
    assert uploads.get_upload(made.id) == made and uploads.get_upload(made.id, key_id="k") == made
    assert uploads.get_upload(made.id, key_id="other") is None and uploads.get_upload("missing") is None
    assert uploads.complete_upload(made.id, 1234) is True
    done = uploads.get_upload(made.id)
    assert done.size == 1234 and done.completed is True and done.storage_key == "uploads/abc/cat.png"
    assert uploads.complete_upload("missing", 1) is False
    sized = uploads.create_upload(None, "uploads/x", "x.jpg", "image/jpeg", size=10)
    assert sized.size == 10 and sized.key_id is None
    db.dispose()
