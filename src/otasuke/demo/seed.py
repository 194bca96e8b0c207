"""Seed the demo team (idempotent): provider, reseller, dispatch partner, three customers.

The customers follow the case studies of the seeds (003, 004): an automotive
parts supplier behind a FortiGate, a clinic with electronic medical records,
and a five-person office.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from otasuke.db.models import Organization, Sensor, User
from otasuke.standard.plans import ContractTerms, Monitoring, PlanType
from otasuke.tenancy import admin
from otasuke.tenancy.roles import OrgKind, Role
from otasuke.tenancy.scope import Viewer

DEMO_PASSWORD = "otasuke-demo-2026"
CANCEL = (
    "契約者は30日前までの書面通知によりいつでも解約できます。最低利用期間内の解約には"
    "解約金がかかります。 / The customer may cancel at any time with 30 days' written "
    "notice; an early-termination fee applies within the minimum term."
)


@dataclass(frozen=True)
class DemoLogin:
    email: str
    role: Role
    organization: str


@dataclass(frozen=True)
class DemoCustomer:
    slug: str
    name: str
    parent: str  # slug of the provider or reseller
    profile: dict[str, object]
    terms: ContractTerms
    sensors: tuple[tuple[str, str], ...]  # (kind, name)
    contact: tuple[str, str]  # (name, email)
    insurance_limit_jpy: int


def _terms(
    monitoring: Monitoring,
    initial: int,
    network: int,
    per_device: int,
    devices: int,
    maker: str,
    model: str,
) -> ContractTerms:
    return ContractTerms(
        plan_type=PlanType.TYPE1,
        monitoring=monitoring,
        initial_price_jpy=initial,
        monthly_network_jpy=network,
        monthly_endpoint_per_device_jpy=per_device,
        device_count=devices,
        minimum_term_months=12,
        early_termination_fee_jpy=20_000,
        cancellation_terms=CANCEL,
        device_maker=maker,
        device_model=model,
        service_country="日本 (Japan)",
        data_country="日本 (Japan)",
    )


CUSTOMERS = (
    DemoCustomer(
        slug="tokai-parts",
        name="東海精密部品株式会社",
        parent="otasuke-provider",
        profile={
            "industry": "自動車部品製造",
            "employees": 45,
            "pcs": 30,
            "it_staff": 0,
            "region": "愛知県",
            "notes": "取引先から自動車産業ガイドライン Lv1 の対応を求められている",
        },
        terms=_terms(Monitoring.BOTH, 150_000, 9_800, 1_500, 30, "Fortinet", "FortiGate 60F"),
        sensors=(
            ("fortigate", "本社UTM FortiGate 60F"),
            ("windows", "社内PC イベントログ"),
            ("suricata", "工場LAN IDS"),
        ),
        contact=("鈴木 一郎 (総務部長)", "suzuki@tokai-parts.example.jp"),
        insurance_limit_jpy=3_000_000,
    ),
    DemoCustomer(
        slug="sakura-clinic",
        name="さくら内科クリニック",
        parent="minato-it",
        profile={
            "industry": "医療 (診療所)",
            "employees": 20,
            "pcs": 15,
            "it_staff": 0,
            "region": "神奈川県",
            "notes": "電子カルテ・レセプトコンピュータを院内LANで運用",
        },
        terms=_terms(Monitoring.BOTH, 100_000, 8_000, 1_000, 15, "Fortinet", "FortiGate 40F"),
        sensors=(("fortigate", "院内UTM"), ("windows", "電子カルテ端末")),
        contact=("佐藤 花子 (事務長)", "office@sakura-clinic.example.jp"),
        insurance_limit_jpy=1_000_000,
    ),
    DemoCustomer(
        slug="yamada-office",
        name="山田会計事務所",
        parent="minato-it",
        profile={
            "industry": "会計事務所",
            "employees": 5,
            "pcs": 5,
            "it_staff": 0,
            "region": "東京都",
        },
        terms=_terms(Monitoring.ENDPOINT, 30_000, 0, 1_800, 5, "Otasuke", "Otasuke Agent 0.1"),
        sensors=(("windows", "事務所PC"),),
        contact=("山田 太郎 (所長)", "yamada@yamada-office.example.jp"),
        insurance_limit_jpy=500_000,
    ),
)

STAFF = (
    ("admin@provider.example.jp", "実施主体 管理者", Role.PROVIDER_ADMIN, "otasuke-provider"),
    ("analyst@provider.example.jp", "SOC アナリスト", Role.ANALYST, "otasuke-provider"),
    ("desk@provider.example.jp", "ヘルプデスク", Role.HELPDESK, "otasuke-provider"),
    ("staff@minato-it.example.jp", "みなとIT 担当者", Role.RESELLER_STAFF, "minato-it"),
    ("tech@kaketsuke.example.jp", "駆付け技術者", Role.PARTNER_TECHNICIAN, "kaketsuke-support"),
    ("admin@tokai-parts.example.jp", "鈴木 一郎", Role.CUSTOMER_ADMIN, "tokai-parts"),
    ("user@tokai-parts.example.jp", "田中 次郎", Role.CUSTOMER_USER, "tokai-parts"),
    ("admin@sakura-clinic.example.jp", "佐藤 花子", Role.CUSTOMER_ADMIN, "sakura-clinic"),
    ("admin@yamada-office.example.jp", "山田 太郎", Role.CUSTOMER_ADMIN, "yamada-office"),
)


def seed_demo(s: Session) -> tuple[list[DemoLogin], dict[str, str]]:
    """Create the demo team if absent; return the logins and the tokens of new sensors."""
    viewer = Viewer.system()
    tokens: dict[str, str] = {}

    def org(slug: str) -> Organization | None:
        return s.scalar(select(Organization).where(Organization.slug == slug))

    provider = org("otasuke-provider") or admin.create_organization(
        s,
        viewer,
        kind=OrgKind.PROVIDER,
        slug="otasuke-provider",
        name="おたすけセキュリティ株式会社",
    )
    if org("minato-it") is None:
        admin.create_organization(
            s,
            viewer,
            kind=OrgKind.RESELLER,
            slug="minato-it",
            name="みなとITサービス株式会社",
            parent=provider,
        )
    if org("kaketsuke-support") is None:
        admin.create_organization(
            s,
            viewer,
            kind=OrgKind.PARTNER,
            slug="kaketsuke-support",
            name="かけつけサポート合同会社",
            parent=provider,
            partner_role="dispatch",
        )
    for c in CUSTOMERS:
        if org(c.slug) is not None:
            continue
        parent = org(c.parent)
        assert parent is not None
        customer = admin.create_organization(
            s,
            viewer,
            kind=OrgKind.CUSTOMER,
            slug=c.slug,
            name=c.name,
            parent=parent,
            profile=dict(c.profile),
        )
        admin.create_contract(
            s,
            viewer,
            customer,
            c.terms,
            start_date=date(2026, 4, 1),
            insurance_limit_jpy=c.insurance_limit_jpy,
        )
        admin.add_contact(s, viewer, customer, name=c.contact[0], email=c.contact[1])
        for kind, name in c.sensors:
            _sensor, token = admin.add_sensor(s, viewer, customer, kind=kind, name=name)
            tokens[f"{c.slug}/{name}"] = token
    logins = []
    for email, name, role, org_slug in STAFF:
        o = org(org_slug)
        assert o is not None
        if s.scalar(select(User.id).where(User.email == email)) is None:
            admin.create_user(
                s,
                viewer,
                organization=o,
                email=email,
                display_name=name,
                role=role,
                password=DEMO_PASSWORD,
            )
        logins.append(DemoLogin(email=email, role=role, organization=o.name))
    return logins, tokens


def demo_sensor(s: Session, customer_slug: str, kind: str) -> Sensor:
    """The demo customer's first sensor of ``kind``."""
    sensor = s.scalar(
        select(Sensor)
        .join(Organization, Sensor.customer_id == Organization.id)
        .where(Organization.slug == customer_slug, Sensor.kind == kind)
        .order_by(Sensor.id)
        .limit(1)
    )
    if sensor is None:
        raise LookupError(f"demo customer {customer_slug} has no {kind} sensor")
    return sensor
