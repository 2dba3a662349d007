"""What the HTTP layer works with: the job store, keys, storage, URL signing, settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ServerSettings
from ..jobs.db import Database, upgrade_database
from ..jobs.keys import KeyStore, shared_secret
from ..jobs.roster import Roster
from ..jobs.store import JobStore
from ..jobs.uploads import UploadStore
from ..storage.base import Storage, open_storage
from ..storage.signing import UrlSigner

# Our model paths, by model family: which engine model serves each API model path.
FAMILIES = {
    "real": {"wavespeed-ai/framepack": "framepack", "wavespeed-ai/framepack-f1": "framepack-f1"},
    "tiny": {"wavespeed-ai/framepack": "tiny", "wavespeed-ai/framepack-f1": "tiny-f1"},
    "small": {"wavespeed-ai/framepack": "small", "wavespeed-ai/framepack-f1": "small-f1"},
}


@dataclass
class Services:
    settings: ServerSettings
    db: Database
    jobs: JobStore
    keys: KeyStore
    uploads: UploadStore
    roster: Roster
    storage: Storage
    signer: UrlSigner

    @property
    def models(self) -> dict[str, str]:
        return FAMILIES[self.settings.model_family]


def build_services(settings: ServerSettings) -> Services:
    """Open (and migrate) the database, the storage and the signing secret."""
    if settings.model_family not in FAMILIES:
        raise ValueError(f"model_family must be one of {', '.join(FAMILIES)}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)
    db = Database(settings.database_url)
    return Services(
        settings=settings,
        db=db,
        jobs=JobStore(db),
        keys=KeyStore(db),
        uploads=UploadStore(db),
        roster=Roster(db),
        storage=open_storage(
            settings.storage_url, endpoint_url=settings.storage_endpoint_url, region=settings.storage_region
        ),
        signer=UrlSigner(shared_secret(db, "url-signing", settings.data_dir / "secret.key")),
    )
