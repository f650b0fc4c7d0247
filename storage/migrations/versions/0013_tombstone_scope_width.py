"""A tombstone's scope holds any list owner's id: a model id may be 512 characters

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cursor_tombstones") as batch:
        batch.alter_column("scope", existing_type=sa.String(64), type_=sa.String(512),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("cursor_tombstones") as batch:
        batch.alter_column("scope", existing_type=sa.String(512), type_=sa.String(64),
                           existing_nullable=False)
