"""Tombstones of deleted rows, so a list paged past one goes on

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cursor_tombstones",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_cursor_tombstones_deleted_at", "cursor_tombstones", ["deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_cursor_tombstones_deleted_at", "cursor_tombstones")
    op.drop_table("cursor_tombstones")
