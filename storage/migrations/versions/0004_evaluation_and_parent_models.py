"""built-in evaluation of a job's model on its validation file; jobs that continue from a
fine-tuned model (their base model beside `model`)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evaluation", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("base_model", sa.String(length=256), nullable=True))
    op.execute("UPDATE fine_tuning_jobs SET base_model = model")
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.alter_column("base_model", existing_type=sa.String(length=256), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.drop_column("base_model")
        batch_op.drop_column("evaluation")
