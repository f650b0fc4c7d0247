"""What each cluster replica has registered and in its node's adapter cache, for the router

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("serving_replicas",
                  sa.Column("disk_adapters", sa.JSON(), nullable=False, server_default="[]"))
    op.add_column("serving_replicas",
                  sa.Column("host_adapters", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    op.drop_column("serving_replicas", "host_adapters")
    op.drop_column("serving_replicas", "disk_adapters")
