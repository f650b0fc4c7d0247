"""Tinker requests a run's trainer executes (seq_id, request, payload, result_proto) and the
trainer's attempt and beat

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tinker_models") as batch:
        batch.add_column(sa.Column("trainer_attempt", sa.Integer(), server_default="0",
                                   nullable=False))
        batch.add_column(sa.Column("trainer_beat_at", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("tinker_futures") as batch:
        batch.add_column(sa.Column("seq_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("request", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("payload", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("result_proto", sa.LargeBinary(), nullable=True))
        batch.create_unique_constraint("uq_tinker_futures_model_seq", ["model_id", "seq_id"])


def downgrade() -> None:
    with op.batch_alter_table("tinker_futures") as batch:
        batch.drop_constraint("uq_tinker_futures_model_seq", type_="unique")
        batch.drop_column("result_proto")
        batch.drop_column("payload")
        batch.drop_column("request")
        batch.drop_column("seq_id")
    with op.batch_alter_table("tinker_models") as batch:
        batch.drop_column("trainer_beat_at")
        batch.drop_column("trainer_attempt")
