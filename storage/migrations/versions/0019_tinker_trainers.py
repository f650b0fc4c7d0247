"""Tinker requests a run's trainer executes (seq_id, request, payload, result_proto), the
trainer's attempt and beat, the checkpoints runs save and sampling sessions

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

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
    op.create_table(
        "tinker_checkpoints",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("base_model", sa.String(length=256), nullable=False),
        sa.Column("lora_config", sa.JSON(), nullable=False),
        sa.Column("blob_prefix", sa.String(length=512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("user_metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("path"),
    )
    op.create_index("ix_tinker_checkpoints_project_seq", "tinker_checkpoints",
                    ["project_id", "seq"])
    op.create_index("ix_tinker_checkpoints_model", "tinker_checkpoints", ["model_id"])
    op.create_table(
        "tinker_samplers",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("session_seq_id", sa.BigInteger(), nullable=False),
        sa.Column("base_model", sa.String(length=256), nullable=False),
        sa.Column("model_path", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("session_id", "session_seq_id",
                            name="uq_tinker_samplers_session_seq"),
    )


def downgrade() -> None:
    op.drop_table("tinker_samplers")
    op.drop_index("ix_tinker_checkpoints_model", "tinker_checkpoints")
    op.drop_index("ix_tinker_checkpoints_project_seq", "tinker_checkpoints")
    op.drop_table("tinker_checkpoints")
    with op.batch_alter_table("tinker_futures") as batch:
        batch.drop_constraint("uq_tinker_futures_model_seq", type_="unique")
        batch.drop_column("result_proto")
        batch.drop_column("payload")
        batch.drop_column("request")
        batch.drop_column("seq_id")
    with op.batch_alter_table("tinker_models") as batch:
        batch.drop_column("trainer_beat_at")
        batch.drop_column("trainer_attempt")
