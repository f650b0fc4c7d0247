"""vLLM replicas on the cluster announce themselves to the API nodes

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving_replicas",
        sa.Column("name", sa.String(length=256), primary_key=True),
        sa.Column("base_model", sa.String(length=256), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("api_key", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("beats", sa.BigInteger(), nullable=False),
        sa.Column("adapter_slots", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("serving_replicas")
