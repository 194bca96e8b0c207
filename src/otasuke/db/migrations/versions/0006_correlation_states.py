"""correlation states: correlation windows per customer, shared by the bus workers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import otasuke.db.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "correlation_states",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_at", otasuke.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["organizations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("customer_id"),
    )


def downgrade() -> None:
    op.drop_table("correlation_states")
