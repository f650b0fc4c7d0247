"""A job's model may name any fine-tuned model it continues from: 512 characters, as
`fine_tuned_models.id` (was 256: a longer parent's job failed on PostgreSQL)

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.alter_column("model", existing_type=sa.String(256), type_=sa.String(512),
                           existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs") as batch:
        batch.alter_column("model", existing_type=sa.String(512), type_=sa.String(256),
                           existing_nullable=False)
