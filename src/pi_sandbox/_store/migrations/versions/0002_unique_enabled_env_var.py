"""Allow one enabled secret per environment variable, enforced by the database.

The store checks this before it writes, but two writers on PostgreSQL can
both pass that check at once; this partial unique index makes the second
commit fail instead.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the partial unique index on ``env_var`` over enabled rows."""
    op.create_index(
        "ix_pi_sandbox_secrets_enabled_env_var",
        "pi_sandbox_secrets",
        ["env_var"],
        unique=True,
        sqlite_where=sa.text("enabled"),
        postgresql_where=sa.text("enabled"),
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_pi_sandbox_secrets_enabled_env_var", table_name="pi_sandbox_secrets")
