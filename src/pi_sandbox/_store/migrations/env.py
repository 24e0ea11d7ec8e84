"""Alembic environment for the secret store; `upgrade_schema` passes the connection in.

There is no alembic.ini: the store runs these migrations itself when it
opens a database. To write a new revision, build an ``alembic.config.Config``
with ``script_location`` set to this folder and call
``alembic.command.revision``.
"""

from __future__ import annotations

from alembic import context

from pi_sandbox._store._models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    msg = (
        "the secret store's migrations run inside pi-sandbox: open the store with "
        "pi_sandbox.open_secret_store(url) and it upgrades the schema"
    )
    raise RuntimeError(msg)

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=context.config.attributes["version_table"],
    # SQLite cannot ALTER most things; batch mode copies the table instead.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
