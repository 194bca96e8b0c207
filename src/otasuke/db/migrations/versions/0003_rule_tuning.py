"""rule tuning: per-customer and provider-wide rule disables, exceptions, level overrides

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 12:58:41.761065
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import otasuke.db.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_tunings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("rule_id", sa.String(length=300), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=True),
        sa.Column("level", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.Column("created_at", otasuke.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["provider_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rule_tunings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rule_tunings_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_rule_tunings_provider_id"), ["provider_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_rule_tunings_rule_id"), ["rule_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rule_tunings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rule_tunings_rule_id"))
        batch_op.drop_index(batch_op.f("ix_rule_tunings_provider_id"))
        batch_op.drop_index(batch_op.f("ix_rule_tunings_customer_id"))
    op.drop_table("rule_tunings")
