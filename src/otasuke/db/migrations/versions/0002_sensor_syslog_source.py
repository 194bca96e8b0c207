"""sensor syslog source: the peer address whose syslog belongs to a sensor

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 12:11:43.661598
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sensors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("syslog_source", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint("uq_sensors_syslog_source", ["syslog_source"])


def downgrade() -> None:
    with op.batch_alter_table("sensors", schema=None) as batch_op:
        batch_op.drop_constraint("uq_sensors_syslog_source", type_="unique")
        batch_op.drop_column("syslog_source")
