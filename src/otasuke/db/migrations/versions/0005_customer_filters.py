"""customer filters: per-customer Sigma filter rules pasted in the console

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 21:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import otasuke.db.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_filters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.Column("created_at", otasuke.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["provider_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("customer_filters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_filters_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_customer_filters_provider_id"), ["provider_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("customer_filters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_filters_provider_id"))
        batch_op.drop_index(batch_op.f("ix_customer_filters_customer_id"))
    op.drop_table("customer_filters")
