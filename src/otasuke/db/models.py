"""Relational state: organisations, users, contracts, sensors, events, alerts, incidents.

The same models run on SQLite (WAL, the embedded default) and PostgreSQL;
the schema is made by the Alembic migrations in ``db/migrations``.
Times are stored as aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now_utc() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012 (SQLAlchemy reads it as given)


class Organization(Base):
    """組織: the provider (実施主体), a reseller (再販協力会社), a partner (パートナー) or a customer (ユーザー)."""

    __tablename__ = "organizations"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    """provider, reseller, partner or customer."""
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    """Reseller and partner: their provider. Customer: its reseller, or the provider directly."""
    provider_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    """The 実施主体 every organisation of a team belongs to (itself for the provider)."""
    partner_role: Mapped[str | None] = mapped_column(String(32))
    """dispatch (駆付け) or insurance (保険), for partners."""
    profile: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """REQ-PROFILE ユーザー概況: industry, employees, PCs, IT staff, region …"""
    created_at: Mapped[datetime] = mapped_column(default=now_utc)


class User(Base):
    """利用者: a person who logs in, with one role in one organisation."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    language: Mapped[str] = mapped_column(String(8), default="ja")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=now_utc)
    organization: Mapped[Organization] = relationship()


class WebSession(Base):
    """A login; only the hash of its token is stored."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=now_utc)
    expires_at: Mapped[datetime]


class Contract(Base):
    """契約 (REQ-PACKAGE, REQ-PRICE): one contract for the whole one package."""

    __tablename__ = "contracts"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    plan_type: Mapped[str] = mapped_column(String(8))
    monitoring: Mapped[str] = mapped_column(String(16))
    initial_price_jpy: Mapped[int] = mapped_column(Integer)
    monthly_network_jpy: Mapped[int] = mapped_column(Integer, default=0)
    monthly_endpoint_per_device_jpy: Mapped[int] = mapped_column(Integer, default=0)
    device_count: Mapped[int] = mapped_column(Integer)
    minimum_term_months: Mapped[int] = mapped_column(Integer)
    early_termination_fee_jpy: Mapped[int | None] = mapped_column(Integer)
    cancellation_terms: Mapped[str] = mapped_column(Text)
    device_maker: Mapped[str] = mapped_column(String(100))
    device_model: Mapped[str] = mapped_column(String(100))
    service_country: Mapped[str] = mapped_column(String(64))
    data_country: Mapped[str | None] = mapped_column(String(64))
    cloud_monitoring: Mapped[bool] = mapped_column(Boolean, default=False)
    monthly_added_service: Mapped[str | None] = mapped_column(String(200))
    insurance_limit_jpy: Mapped[int | None] = mapped_column(Integer)
    """簡易サイバー保険: yearly limit of incident-response costs covered."""
    free_dispatches_per_year: Mapped[int] = mapped_column(Integer, default=1)
    """REQ-DISPATCH: at least one free visit a year."""
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(default=now_utc)


class Contact(Base):
    """連絡先: who at the customer is told when something serious happens."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(40))
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    language: Mapped[str] = mapped_column(String(8), default="ja")


class Sensor(Base):
    """センサー: a UTM, IDS, PC or agent that sends us logs, with its ingest token (hashed)."""

    __tablename__ = "sensors"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(12))
    """First characters of the token, so people can tell tokens apart."""
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Tokyo")
    silent_after_minutes: Mapped[int] = mapped_column(Integer, default=60)
    created_at: Mapped[datetime] = mapped_column(default=now_utc)
    last_event_at: Mapped[datetime | None]
    event_count: Mapped[int] = mapped_column(BigInteger, default=0)
    syslog_source: Mapped[str | None] = mapped_column(String(255), unique=True)
    """Source address (IP) whose syslog belongs to this sensor."""
    __table_args__ = (UniqueConstraint("customer_id", "name"),)


class StoredEvent(Base):
    """An accepted event, stored before the sender is answered."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    sensor_id: Mapped[int | None] = mapped_column(ForeignKey("sensors.id"))
    event_uid: Mapped[str] = mapped_column(String(128))
    source_format: Mapped[str] = mapped_column(String(32))
    observed_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=now_utc)
    host: Mapped[str | None] = mapped_column(String(255))
    record_id: Mapped[int | None] = mapped_column(BigInteger)
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    raw: Mapped[str] = mapped_column(Text, default="")
    processed: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (
        UniqueConstraint("customer_id", "event_uid", name="uq_events_customer_uid"),
        Index("ix_events_pending", "processed", "id"),
        Index("ix_events_customer_time", "customer_id", "observed_at"),
    )


class QuarantinedRecord(Base):
    """隔離: a record we could not accept, kept with the reason (nothing rejected vanishes)."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    sensor_id: Mapped[int | None] = mapped_column(ForeignKey("sensors.id"))
    received_at: Mapped[datetime] = mapped_column(default=now_utc)
    location: Mapped[str] = mapped_column(String(500))
    source_format: Mapped[str | None] = mapped_column(String(32))
    field: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)


class Incident(Base):
    """インシデント: alerts of one customer, host and rule family close in time."""

    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    host: Mapped[str | None] = mapped_column(String(255))
    family: Mapped[str] = mapped_column(String(300))
    """Grouping key: detector and rule (sigma:<id>, suricata:<sid>, ioc:<list> …)."""
    title: Mapped[str] = mapped_column(String(500))
    severity: Mapped[str] = mapped_column(String(16), index=True)
    step: Mapped[str] = mapped_column(String(32), default="discovery")
    """REQ-IR-STEPS: discovery, first_response, investigation, recovery, final_report."""
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    first_evidence_at: Mapped[datetime]
    last_evidence_at: Mapped[datetime]
    sla_started_at: Mapped[datetime | None]
    """When the REQ-MON-60MIN clock started: the first evidence, or, for evidence that
    reached us more than 10 minutes late (imported files, a sensor's backlog), its arrival."""
    notify_deadline: Mapped[datetime | None]
    """REQ-MON-60MIN: SLA start + 60 minutes, for serious incidents."""
    notified_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    """REQ-MON-60MIN: when the provider's staff were alerted that the customer was still untold."""
    alert_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=now_utc)
    updated_at: Mapped[datetime] = mapped_column(default=now_utc)
    customer: Mapped[Organization] = relationship()
    alerts: Mapped[list[Alert]] = relationship(back_populates="incident", order_by="Alert.id")
    __table_args__ = (
        Index("ix_incidents_group", "customer_id", "family", "host", "last_evidence_at"),
    )


class Alert(Base):
    """アラート: one detection on one event, with the rule's attribution (DRL 1.1)."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    source: Mapped[str] = mapped_column(String(16))
    rule_id: Mapped[str] = mapped_column(String(300))
    rule_title: Mapped[str] = mapped_column(String(500))
    level: Mapped[str] = mapped_column(String(16))
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    severity: Mapped[str] = mapped_column(String(16))
    rule_author: Mapped[str | None] = mapped_column(Text)
    rule_licence: Mapped[str | None] = mapped_column(String(64))
    rule_licence_url: Mapped[str | None] = mapped_column(String(500))
    rule_url: Mapped[str | None] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    references: Mapped[list[Any]] = mapped_column(default=list)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    matched: Mapped[dict[str, Any]] = mapped_column(default=dict)
    host: Mapped[str | None] = mapped_column(String(255))
    observed_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=now_utc)
    incident: Mapped[Incident] = relationship(back_populates="alerts")
    event: Mapped[StoredEvent | None] = relationship()


class Notification(Base):
    """通知: one message to one customer about one incident, and whether it went out."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    recipients: Mapped[list[Any]] = mapped_column(default=list)
    subject: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    """sent, failed."""
    error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=now_utc)
    sent_at: Mapped[datetime | None]


class AuditEntry(Base):
    """監査ログ: who did what to which object (REQ-LAW)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=now_utc, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor: Mapped[str] = mapped_column(String(254))
    """The user's e-mail, or "cli" / "system"."""
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RuleTuning(Base):
    """ルール調整: disable a rule, add an exception or override its level (REQ-MON-EP).

    ``customer_id`` None: for every customer of ``provider_id`` (provider-wide); a
    customer's own tuning of a rule overrides the provider-wide one. Rows are added and
    removed, never edited, each with an audit entry (see ``otasuke.detect.tuning``).
    """

    __tablename__ = "rule_tunings"
    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(300), index=True)
    action: Mapped[str] = mapped_column(String(16))
    """disable, exception or level."""
    selection: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """Exception: a Sigma selection, field (with |modifiers) → value or list of values."""
    level: Mapped[str | None] = mapped_column(String(16))
    """Level override: one of the Sigma levels."""
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=now_utc)


class CustomerFilter(Base):
    """顧客別フィルタ: one customer's Sigma filter rule, pasted in the console (REQ-MON-EP).

    ``document`` is the YAML as pasted (checked with pySigma when added); the detector
    applies it to that customer's events only (see ``otasuke.detect.customer_filters``).
    Rows are added and removed, never edited, each with an audit entry (REQ-LAW).
    """

    __tablename__ = "customer_filters"
    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    title: Mapped[str] = mapped_column(String(256))
    document: Mapped[str] = mapped_column(Text)
    """The Sigma filter YAML (one document)."""
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(default=now_utc)


class CorrelationState(Base):
    """相関ルールの共有状態: one customer's open correlation windows, shared by bus workers.

    ``state`` is :meth:`CorrelationEngine.customer_snapshot` as JSON; ``version`` grows by
    one with each write. A worker reads it under the customer's advisory lock before it
    feeds that customer's events to its correlations and writes it back in the same
    transaction (see ``otasuke.detect.correlation_shared``).
    """

    __tablename__ = "correlation_states"
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(default=0)
    state: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=now_utc)
