"""The secret that signs an external weights checkpoint's download URLs

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tinker_checkpoints") as batch:
        batch.add_column(sa.Column("download_secret", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tinker_checkpoints") as batch:
        batch.drop_column("download_secret")
