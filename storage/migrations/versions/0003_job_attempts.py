"""job attempts (fencing), recoveries and committed training state

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("recoveries", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("resume_state", sa.String(length=512), nullable=True))
        # A pause request is now the `pausing` status.
        batch_op.drop_column("control")


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("control", sa.String(length=16), nullable=True))
        batch_op.drop_column("resume_state")
        batch_op.drop_column("recoveries")
        batch_op.drop_column("attempt")
