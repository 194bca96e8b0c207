"""Settings (設定): OTASUKE_* environment variables over an optional TOML file (STYLE §7).

Every field is documented where it is declared; docs/operator/settings.md lists
them all and a test checks that it does.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _default_data_dir() -> Path:
    return Path(os.environ.get("OTASUKE_DATA_DIR", "data")).resolve()


class Settings(BaseSettings):
    """Otasuke settings: OTASUKE_* env vars override the TOML file ``<data_dir>/otasuke.toml``."""

    model_config = SettingsConfigDict(
        env_prefix="OTASUKE_", extra="forbid", use_attribute_docstrings=True
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Data folder: the SQLite database, the Maildir of unsent mail, uploads."""
    database_url: str | None = None
    """SQLAlchemy URL; unset means SQLite (WAL) at <data_dir>/otasuke.db.
    Example: postgresql+psycopg://user@127.0.0.1:5432/otasuke"""
    host: str = "127.0.0.1"
    """Address the web server listens on."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port the web server listens on."""
    base_url: str | None = None
    """Public address of the console, used for links in mails (e.g.
    https://soc.example.jp); unset means http://<host>:<port>."""
    secret_key: str | None = None
    """Key that signs session cookies; unset means one is made and kept in <data_dir>/secret.key."""
    cookie_secure: bool = False
    """Send session cookies only over HTTPS (set true behind TLS)."""
    session_hours: int = Field(default=12, ge=1, le=24 * 30)
    """How long a login lasts."""
    rules_paths: list[Path] = Field(default_factory=list)
    """Sigma rule files or folders; empty means the SigmaHQ rules bundled with Otasuke."""
    cache_dir: Path | None = None
    """Compiled-rule cache (rebuilt for any rule file that changes); unset means
    <data_dir>/cache."""
    ioc_paths: list[Path] = Field(default_factory=list)
    """IOC list files or folders; empty means the maltrail lists bundled with Otasuke."""
    smtp_host: str | None = None
    """SMTP server for notifications; unset means mail is written to <data_dir>/maildir."""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    """SMTP port (25, 587 with STARTTLS, 465 with implicit TLS)."""
    smtp_tls: str = Field(default="none", pattern="^(none|starttls|implicit)$")
    """SMTP transport security: none, starttls or implicit."""
    smtp_username: str | None = None
    """SMTP login name, if the server needs one."""
    smtp_password: str | None = Field(default=None, repr=False)
    """SMTP password (never logged)."""
    mail_from: str = "otasuke@localhost"
    """Sender address of notifications."""
    desk_phone: str = "0120-000-000"
    """Help desk phone number printed in notifications (相談窓口)."""
    desk_email: str = "desk@otasuke.example"
    """Help desk mail address printed in notifications."""
    notify_target_minutes: int = Field(default=60, ge=1, le=60)
    """REQ-MON-60MIN: minutes from first evidence within which the customer must be told."""
    escalate_after_minutes: int = Field(default=40, ge=1, le=59)
    """REQ-MON-60MIN: a serious incident not yet told to the customer this long after its
    SLA start is escalated to the provider's administrators and analysts by mail."""
    incident_window_minutes: int = Field(default=60, ge=1, le=24 * 60)
    """Alerts of one customer, host and rule family within this window join one incident."""
    ingest_max_batch_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest ingest request body accepted (HTTP 413 above)."""
    ingest_max_pending: int = Field(default=200_000, ge=1)
    """Events accepted (in the spool or the database) but not yet through detection above
    which HTTP ingest answers 429 with Retry-After (nothing of a refused batch is stored;
    the sender retries)."""
    ingest_max_inflight: int = Field(default=32, ge=1)
    """Ingest requests being spooled at once above which HTTP ingest answers 429."""
    ingest_max_spool_bytes: int = Field(default=2 * 1024**3, ge=1024 * 1024)
    """Spool bytes not yet drained (or published to the bus) above which HTTP ingest
    answers 429 with Retry-After (the disk is protected; syslog is not refused)."""
    worker_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    """How often the in-process worker looks for accepted events not yet processed."""
    event_store_dir: Path | None = None
    """Parquet event store (per customer and day, searched with DuckDB); unset means
    <data_dir>/events."""
    event_retention_days: int = Field(default=90, ge=1)
    """Days of events kept in the event store when the contract names no other figure."""
    event_export_interval_seconds: float = Field(default=60, gt=0)
    """How often processed events are copied into the event store."""
    correlation_state_seconds: float = Field(default=60, ge=0)
    """How often each detecting process saves its correlation windows under
    <data_dir>/correlation (also on a clean shutdown; read back at start), so an attack
    spanning a restart is still correlated; 0 means they are not kept across restarts."""
    sensor_check_seconds: float = Field(default=60, gt=0)
    """How often sensors are checked for silence (REQ-MON-24H)."""
    metrics_token: str | None = Field(default=None, repr=False)
    """Bearer token that /metrics requires; unset means /metrics is open (keep it on
    loopback or behind the proxy then)."""
    bus_url: str | None = None
    """NATS JetStream server(s), comma-separated (nats://127.0.0.1:4222); unset means no bus:
    receivers store into the database themselves. Set: receivers publish, `otasuke worker`
    processes store and detect."""
    bus_stream: str = "OTASUKE_INGEST"
    """JetStream stream name."""
    bus_subject_prefix: str = "otasuke.ingest"
    """Subject prefix of the ingest messages."""
    bus_durable: str = "otasuke-workers"
    """Durable consumer name shared by all workers."""
    bus_duplicate_window_seconds: float = Field(default=120.0, gt=0)
    """JetStream duplicate window: a batch re-published within it is dropped."""
    bus_batch_records: int = Field(default=500, ge=1)
    """Most spool records in one bus message."""
    bus_batch_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest bus message."""
    bus_ack_wait_seconds: float = Field(default=30.0, gt=0)
    """How long JetStream waits for a worker's ack before redelivering."""
    bus_replicas: int = Field(default=1, ge=1, le=5)
    """Stream replicas (a NATS cluster)."""
    drop_dir: Path | None = None
    """Watched drop folder: files under <drop_dir>/<customer slug>/[<sensor name>/] are
    imported by `otasuke serve`; unset means <data_dir>/drop."""
    drop_poll_seconds: float = Field(default=5.0, gt=0)
    """How often the drop folder is scanned."""
    syslog_tcp_host: str = "127.0.0.1"
    """Address of the syslog TCP receiver (0.0.0.0 to accept UTMs on the network)."""
    syslog_tcp_port: int | None = Field(default=5514, ge=1, le=65535)
    """Port of the syslog TCP receiver (LF or octet-counted framing); unset turns it off."""
    syslog_udp_host: str = "127.0.0.1"
    """Address of the syslog UDP receiver."""
    syslog_udp_port: int | None = Field(default=5514, ge=1, le=65535)
    """Port of the syslog UDP receiver (UDP cannot be acknowledged); unset turns it off."""
    syslog_tls_host: str = "127.0.0.1"
    """Address of the syslog TLS receiver (0.0.0.0 to accept UTMs on the network)."""
    syslog_tls_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the syslog TLS receiver (RFC 5425, usually 6514); unset turns it off."""
    syslog_tls_certfile: Path | None = None
    """PEM server certificate (chain after it) of the syslog TLS receiver."""
    syslog_tls_keyfile: Path | None = None
    """Unencrypted PEM private key of syslog_tls_certfile."""
    syslog_max_line_bytes: int = Field(default=65536, ge=1024)
    """Longest syslog line accepted; longer lines are quarantined."""
    relp_host: str = "127.0.0.1"
    """Address of the RELP receiver (0.0.0.0 to accept relays and UTMs on the network)."""
    relp_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the RELP receiver (rsyslog omrelp; usually 2514): each message is answered
    only once it is on disk, and the sender resends what was not answered; unset turns
    it off."""
    relp_tls_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of RELP over TLS (rsyslog omrelp tls="on"), with the certificate and key of
    syslog_tls_certfile / syslog_tls_keyfile; unset turns it off."""
    relp_max_data_bytes: int = Field(default=65536, ge=1024)
    """Largest RELP message accepted; a larger frame closes the session (logged, counted
    in /metrics) and the sender keeps the message."""
    spool_dir: Path | None = None
    """Append-only spool where received lines are fsynced before acknowledgement;
    unset means <data_dir>/spool."""
    spool_fsync: bool = True
    """fsync the spool before acknowledging (turn off only to measure its cost)."""
    spool_segment_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    """Size at which the spool starts a new segment file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _default_data_dir() / "otasuke.toml"
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @property
    def public_url(self) -> str:
        """Where people reach the console and portal: ``base_url``, else host and port."""
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'otasuke.db'}"

    @property
    def rule_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"

    @property
    def maildir(self) -> Path:
        return self.data_dir / "maildir"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
