"""The hand-written Alembic migrations build exactly the schema of ``tables.py``."""

from __future__ import annotations

import threading

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from framepack_server.jobs.db import Database, _alembic_config, make_engine, upgrade_database
from framepack_server.jobs.tables import Base

TABLES = {"jobs", "api_keys", "uploads", "workers", "server_secrets"}
HEAD = "0002"


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_metadata(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade_database(url)
    assert _diff(url) == []
    head = ScriptDirectory.from_config(_alembic_config(url)).get_current_head()
    assert head == HEAD and _revision(url) == head
    upgrade_database(url)  # at head already: nothing to do
    assert _revision(url) == head


def test_metadata_has_no_server_defaults_to_compare():
    # compare_metadata above leaves server defaults out: SQLite has no identity column, so the
    # identity of jobs.seq (PostgreSQL) would show as a false difference. Nothing else may have one.
    for table in Base.metadata.tables.values():
        for column in table.columns:
            assert column.server_default is None or (table.name, column.name) == ("jobs", "seq"), column


def test_downgrade_and_upgrade_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade_database(url)
    command.downgrade(_alembic_config(url), "base")
    engine = make_engine(url)
    assert TABLES.isdisjoint(inspect(engine).get_table_names())
    engine.dispose()
    upgrade_database(url)
    assert _diff(url) == []


def test_databases_opened_together_on_a_fresh_file_migrate_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'm.sqlite'}"
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        try:
            start.wait()
            Database(url).dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _diff(url) == [] and _revision(url) == HEAD
