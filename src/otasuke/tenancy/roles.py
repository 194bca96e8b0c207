"""Roles and what each may do (REQ-TEAM).

=====================  ==============  ==========================================
role                   organisation    sees / may
=====================  ==============  ==========================================
provider_admin         provider        every customer; contracts, users, audit
analyst                provider        every customer; triage, sensors
helpdesk               provider        every customer (read); inquiries
reseller_staff         reseller        only the reseller's own customers (read)
partner_technician     partner         only jobs given to the partner
customer_admin         customer        only its own company; its contacts
customer_user          customer        only its own company (read)
=====================  ==============  ==========================================
"""

from __future__ import annotations

from enum import StrEnum

from otasuke.i18n import _


class OrgKind(StrEnum):
    PROVIDER = "provider"  # 実施主体
    RESELLER = "reseller"  # 再販協力会社
    PARTNER = "partner"  # パートナー
    CUSTOMER = "customer"  # ユーザー (中小企業)


class Role(StrEnum):
    PROVIDER_ADMIN = "provider_admin"
    ANALYST = "analyst"
    HELPDESK = "helpdesk"
    RESELLER_STAFF = "reseller_staff"
    PARTNER_TECHNICIAN = "partner_technician"
    CUSTOMER_ADMIN = "customer_admin"
    CUSTOMER_USER = "customer_user"

    @property
    def org_kind(self) -> OrgKind:
        return ROLE_ORG[self]

    @property
    def label(self) -> str:
        return {
            Role.PROVIDER_ADMIN: _("Provider administrator"),
            Role.ANALYST: _("Analyst"),
            Role.HELPDESK: _("Help desk"),
            Role.RESELLER_STAFF: _("Reseller staff"),
            Role.PARTNER_TECHNICIAN: _("Partner technician"),
            Role.CUSTOMER_ADMIN: _("Customer administrator"),
            Role.CUSTOMER_USER: _("Customer user"),
        }[self]

    @property
    def is_staff(self) -> bool:
        """Works in the provider console (not the customer portal)."""
        return self.org_kind is not OrgKind.CUSTOMER


ROLE_ORG = {
    Role.PROVIDER_ADMIN: OrgKind.PROVIDER,
    Role.ANALYST: OrgKind.PROVIDER,
    Role.HELPDESK: OrgKind.PROVIDER,
    Role.RESELLER_STAFF: OrgKind.RESELLER,
    Role.PARTNER_TECHNICIAN: OrgKind.PARTNER,
    Role.CUSTOMER_ADMIN: OrgKind.CUSTOMER,
    Role.CUSTOMER_USER: OrgKind.CUSTOMER,
}


class Permission(StrEnum):
    VIEW_CUSTOMERS = "view_customers"
    MANAGE_CONTRACTS = "manage_contracts"
    MANAGE_SENSORS = "manage_sensors"
    TRIAGE_INCIDENTS = "triage_incidents"
    VIEW_AUDIT = "view_audit"
    VIEW_MAIL = "view_mail"


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.PROVIDER_ADMIN: frozenset(Permission),
    Role.ANALYST: frozenset(
        {
            Permission.VIEW_CUSTOMERS,
            Permission.MANAGE_SENSORS,
            Permission.TRIAGE_INCIDENTS,
            Permission.VIEW_MAIL,
        }
    ),
    Role.HELPDESK: frozenset({Permission.VIEW_CUSTOMERS, Permission.VIEW_MAIL}),
    Role.RESELLER_STAFF: frozenset({Permission.VIEW_CUSTOMERS}),
    Role.PARTNER_TECHNICIAN: frozenset(),
    Role.CUSTOMER_ADMIN: frozenset(),
    Role.CUSTOMER_USER: frozenset(),
}
