"""API keys may belong to a fine-tuning job (revoked when it ends)

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("job_id", sa.String(64), nullable=True))
        batch.create_index("ix_api_keys_job_id", ["job_id"])


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys_job_id")
        batch.drop_column("job_id")
