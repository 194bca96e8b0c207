"""ルール調整 (rule tuning) pages: per customer and provider-wide (issue 4 point 6).

A customer's page also holds its Sigma filters (顧客別フィルタ, issue 4 point 1): pasted
YAML, checked with pySigma (a mistake is explained in Japanese, naming what to fix),
stored in ``customer_filters`` with an audit entry and applied by the detector to that
customer's events only (:mod:`otasuke.detect.customer_filters`).

Analysts and provider administrators (TRIAGE_INCIDENTS) disable a rule, add an
exception or override a level, each with a reason; every addition and removal writes an
audit entry (REQ-LAW). Rows belong to the viewer's provider; another provider's
customer or row answers 404, like an absent one (REQ-TEAM). The detector picks the
change up before its next batch (:meth:`otasuke.detect.engine.Detector.refresh_tunings`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from otasuke import audit
from otasuke.db.models import CustomerFilter, Organization, RuleTuning
from otasuke.detect.detection import SIGMA_LEVELS
from otasuke.detect.sigma.filters import FilterProblem, filter_from_text
from otasuke.detect.sigma.rules import BUNDLED_DIR
from otasuke.detect.tuning import TuningAction, TuningError, make_tuning, shipped_source
from otasuke.detect.tuning import shipped_tunings as shipped
from otasuke.errors import NotFound
from otasuke.i18n import _
from otasuke.tenancy.roles import Permission
from otasuke.tenancy.scope import access_alert_by_id, access_customer_by_slug
from otasuke.web.deps import CurrentUser, DbSession, check_csrf, needs
from otasuke.web.render import render

router = APIRouter(dependencies=[Depends(check_csrf)], include_in_schema=False)
Tuner = Annotated[CurrentUser, Depends(needs(Permission.TRIAGE_INCIDENTS))]
Text = Annotated[str, Form()]
RULE_LINE = re.compile(r"^(id|title):\s*['\"]?(.*?)['\"]?\s*$", re.MULTILINE)
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
FILTER_EXAMPLE = """title: 保守業者によるログ消去は除外
logsource:
    product: windows
filter:
    rules:
        - 100ef69e-3327-481c-8e5c-6d80d9507556
    selection:
        SubjectUserName|endswith: '-maint'
    condition: not selection
"""


def action_labels() -> dict[str, str]:
    return {
        TuningAction.DISABLE.value: _("Disable the rule"),
        TuningAction.EXCEPTION.value: _("Exception"),
        TuningAction.LEVEL.value: _("Level override"),
    }


@cache
def rule_titles(paths: tuple[Path, ...]) -> dict[str, str]:
    """rule id → title of every rule file the detector loads (read once, no compiling)."""
    out: dict[str, str] = {}
    for folder in paths:
        files = sorted(folder.rglob("*.yml")) if folder.is_dir() else [folder]
        for path in files:
            title = ""
            for match in RULE_LINE.finditer(path.read_text("utf-8", "replace")):
                key, value = match.group(1), match.group(2)
                if key == "title":
                    title = value
                else:  # every document of the file (correlations) has its own id
                    out[value] = title
    return out


def known_rules(request: Request) -> dict[str, str]:
    paths: Sequence[Path] = request.app.state.settings.rules_paths or [BUNDLED_DIR]
    return rule_titles(tuple(paths))


def access_tuning_by_id(
    s: DbSession, user: CurrentUser, tuning_id: int, customer: Organization | None
) -> RuleTuning:
    """One of this provider's rows, of this customer (None: provider-wide), else 404."""
    row = s.scalar(
        select(RuleTuning).where(
            RuleTuning.id == tuning_id,
            RuleTuning.provider_id == user.provider_id,
            RuleTuning.customer_id == customer.id
            if customer is not None
            else RuleTuning.customer_id.is_(None),
        )
    )
    if row is None:
        raise NotFound(_("No such tuning."), field="tuning")
    return row


def rows_of(s: DbSession, user: CurrentUser, customer: Organization | None) -> list[RuleTuning]:
    scope = (
        RuleTuning.customer_id == customer.id
        if customer is not None
        else RuleTuning.customer_id.is_(None)
    )
    query = select(RuleTuning).where(RuleTuning.provider_id == user.provider_id, scope)
    return list(s.scalars(query.order_by(RuleTuning.rule_id, RuleTuning.id)))


def prefill(
    s: DbSession, user: CurrentUser, customer: Organization, alert_id: int
) -> dict[str, str]:
    """「このルールを調整」: the alert's rule and matched fields as an exception to edit."""
    alert = access_alert_by_id(s, user.viewer, alert_id)
    if alert.customer_id != customer.id:
        raise NotFound(_("No such alert."), field="alert")
    matched = {k: v for k, v in (alert.matched or {}).items() if isinstance(v, str | int)}
    selection = yaml.safe_dump(matched, allow_unicode=True, sort_keys=False) if matched else ""
    return {"rule_id": alert.rule_id, "action": "exception", "selection": selection}


def page(
    request: Request,
    s: DbSession,
    user: CurrentUser,
    customer: Organization | None,
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    filter_form: dict[str, str] | None = None,
    filter_error: str | None = None,
) -> Response:
    return render(
        request,
        "console/tuning.html",
        {
            "customer": customer,
            "rows": rows_of(s, user, customer),
            "provider_rows": rows_of(s, user, None) if customer is not None else [],
            "shipped": shipped(),
            "source": shipped_source(),
            "titles": known_rules(request),
            "labels": action_labels(),
            "levels": SIGMA_LEVELS,
            "form": form or {},
            "error": error,
            "filters": filters_of(s, user, customer) if customer is not None else [],
            "filter_form": filter_form or {},
            "filter_error": filter_error,
            "filter_example": FILTER_EXAMPLE,
        },
        status_code=400 if error or filter_error else 200,
    )


def add(
    request: Request,
    s: DbSession,
    user: CurrentUser,
    customer: Organization | None,
    form: dict[str, str],
) -> Response:
    """Check the form, store the row and its audit entry; the page again on a mistake."""
    try:
        row = checked_row(request, user, customer, form)
    except TuningError as err:
        return page(request, s, user, customer, form=form, error=err.message)
    s.add(row)
    s.flush()
    audit.record(
        s,
        user.viewer,
        "rule_tuning.add",
        f"rule:{row.rule_id}",
        customer_id=row.customer_id,
        tuning_id=row.id,
        tuning=row.action,
        level=row.level,
        selection=row.selection,
        reason=row.reason,
    )
    return RedirectResponse(url_of(customer), status_code=303)


def checked_row(
    request: Request, user: CurrentUser, customer: Organization | None, form: dict[str, str]
) -> RuleTuning:
    rule_id, action, reason = form["rule_id"].strip(), form["action"], form["reason"].strip()
    if not reason:
        raise TuningError(_("Say why (the reason is kept in the audit log)."), field="reason")
    if rule_id not in known_rules(request):
        raise TuningError(_("No loaded rule has this id."), field="rule_id")
    selection: Any = None
    if action == TuningAction.EXCEPTION:
        try:
            selection = yaml.safe_load(form["selection"] or "")
        except yaml.YAMLError:
            raise TuningError(_("The exception is not valid YAML."), field="selection") from None
    level = form["level"] if action == TuningAction.LEVEL else None
    try:
        tuning = make_tuning(rule_id, action, reason, selection=selection, level=level)
    except TuningError as err:
        message = _("This tuning cannot be used ({detail}).").format(detail=err.message)
        raise TuningError(message, field=err.field) from None
    return RuleTuning(
        provider_id=user.provider_id,
        customer_id=customer.id if customer is not None else None,
        rule_id=tuning.rule_id,
        action=tuning.action.value,
        selection=dict(selection) if selection is not None else None,
        level=level,
        reason=reason,
        created_by=user.email,
    )


def remove(
    s: DbSession, user: CurrentUser, customer: Organization | None, tuning_id: int, reason: str
) -> Response:
    row = access_tuning_by_id(s, user, tuning_id, customer)
    audit.record(
        s,
        user.viewer,
        "rule_tuning.remove",
        f"rule:{row.rule_id}",
        customer_id=row.customer_id,
        tuning_id=row.id,
        tuning=row.action,
        level=row.level,
        selection=row.selection,
        reason=reason.strip() or _("(no reason given)"),
        added_reason=row.reason,
    )
    s.delete(row)
    return RedirectResponse(url_of(customer), status_code=303)


def url_of(customer: Organization | None) -> str:
    return f"/console/customers/{customer.slug}/tuning" if customer else "/console/tuning"


@router.get("/console/tuning", response_class=HTMLResponse)
def provider_tuning(request: Request, s: DbSession, user: Tuner) -> Response:
    """提供者共通の調整: the shipped defaults and this provider's own."""
    return page(request, s, user, None)


@router.post("/console/tuning")
def provider_add(
    request: Request,
    s: DbSession,
    user: Tuner,
    rule_id: Text = "",
    action: Text = "",
    level: Text = "",
    selection: Text = "",
    reason: Text = "",
) -> Response:
    form = {"rule_id": rule_id, "action": action, "level": level, "selection": selection}
    return add(request, s, user, None, {**form, "reason": reason})


@router.post("/console/tuning/{tuning_id}/remove")
def provider_remove(tuning_id: int, s: DbSession, user: Tuner, reason: Text = "") -> Response:
    return remove(s, user, None, tuning_id, reason)


@router.get("/console/customers/{slug}/tuning", response_class=HTMLResponse)
def customer_tuning(
    request: Request, slug: str, s: DbSession, user: Tuner, alert: int | None = None
) -> Response:
    """One customer's tunings; ``?alert=`` prefills an exception from that alert."""
    customer = access_customer_by_slug(s, user.viewer, slug)
    form = prefill(s, user, customer, alert) if alert is not None else None
    return page(request, s, user, customer, form=form)


@router.post("/console/customers/{slug}/tuning")
def customer_add(
    request: Request,
    slug: str,
    s: DbSession,
    user: Tuner,
    rule_id: Text = "",
    action: Text = "",
    level: Text = "",
    selection: Text = "",
    reason: Text = "",
) -> Response:
    customer = access_customer_by_slug(s, user.viewer, slug)
    form = {"rule_id": rule_id, "action": action, "level": level, "selection": selection}
    return add(request, s, user, customer, {**form, "reason": reason})


@router.post("/console/customers/{slug}/tuning/{tuning_id}/remove")
def customer_remove(
    slug: str, tuning_id: int, s: DbSession, user: Tuner, reason: Text = ""
) -> Response:
    customer = access_customer_by_slug(s, user.viewer, slug)
    return remove(s, user, customer, tuning_id, reason)


def filters_of(s: DbSession, user: CurrentUser, customer: Organization) -> list[CustomerFilter]:
    query = select(CustomerFilter).where(
        CustomerFilter.provider_id == user.provider_id,
        CustomerFilter.customer_id == customer.id,
    )
    return list(s.scalars(query.order_by(CustomerFilter.id)))


def access_filter_by_id(
    s: DbSession, user: CurrentUser, filter_id: int, customer: Organization
) -> CustomerFilter:
    """One of this provider's filters of this customer, else 404."""
    row = s.scalar(
        select(CustomerFilter).where(
            CustomerFilter.id == filter_id,
            CustomerFilter.provider_id == user.provider_id,
            CustomerFilter.customer_id == customer.id,
        )
    )
    if row is None:
        raise NotFound(_("No such filter."), field="filter")
    return row


def filter_problem_message(err: FilterProblem) -> str:
    """What is wrong with a pasted filter and what to do, in the viewer's language."""
    if err.kind == "yaml":
        if err.line is not None:
            return _(
                "The filter is not valid YAML (line {line}). Check the indentation and "
                "quoting there, then add it again."
            ).format(line=err.line)
        return _(
            "The filter is not valid YAML. Check the indentation and quoting, then add it again."
        )
    if err.kind == "documents":
        return _(
            "Paste exactly one filter (found {count} YAML documents). Add each filter separately."
        ).format(count=err.message.split()[0])
    if err.kind == "not_filter":
        return _(
            "This is not a Sigma filter: it needs a filter: section (rules:, a selection and "
            "condition:) and no detection: section. Start from the example below."
        )
    return _(
        "pySigma refused the filter: {detail}. Correct that part of the YAML and add it again."
    ).format(detail=err.message.removeprefix("pySigma: "))


def checked_filter(request: Request, document: str) -> tuple[str, str]:
    """(title, message): the filter's title, or a message saying what to fix."""
    try:
        tree = filter_from_text(document)
    except FilterProblem as err:
        return "", filter_problem_message(err)
    known = known_rules(request)
    spec = tree.filter
    unknown = (
        [r for r in (spec.rules or ()) if UUID.match(r) and r not in known]
        if spec is not None
        else []
    )
    if unknown:
        return "", _(
            "filter: rules: names no loaded rule ({reference}). Use a rule id shown on "
            "this page or in the alert."
        ).format(reference=unknown[0])
    return tree.info.title or _("Filter"), ""


@router.post("/console/customers/{slug}/filters")
def customer_filter_add(
    request: Request,
    slug: str,
    s: DbSession,
    user: Tuner,
    document: Text = "",
    reason: Text = "",
) -> Response:
    """顧客別フィルタの追加: check the YAML with pySigma, store it, audit it."""
    customer = access_customer_by_slug(s, user.viewer, slug)
    form = {"document": document, "reason": reason}
    if not reason.strip():
        message = _("Say why (the reason is kept in the audit log).")
        return page(request, s, user, customer, filter_form=form, filter_error=message)
    title, message = checked_filter(request, document)
    if message:
        return page(request, s, user, customer, filter_form=form, filter_error=message)
    row = CustomerFilter(
        provider_id=user.provider_id,
        customer_id=customer.id,
        title=title[:256],
        document=document,
        reason=reason.strip(),
        created_by=user.email,
    )
    s.add(row)
    s.flush()
    audit.record(
        s,
        user.viewer,
        "customer_filter.add",
        f"filter:{row.id}",
        customer_id=customer.id,
        filter_id=row.id,
        title=row.title,
        document=row.document,
        reason=row.reason,
    )
    return RedirectResponse(url_of(customer) + "#filters", status_code=303)


@router.post("/console/customers/{slug}/filters/{filter_id}/remove")
def customer_filter_remove(
    slug: str, filter_id: int, s: DbSession, user: Tuner, reason: Text = ""
) -> Response:
    customer = access_customer_by_slug(s, user.viewer, slug)
    row = access_filter_by_id(s, user, filter_id, customer)
    audit.record(
        s,
        user.viewer,
        "customer_filter.remove",
        f"filter:{row.id}",
        customer_id=customer.id,
        filter_id=row.id,
        title=row.title,
        document=row.document,
        reason=reason.strip() or _("(no reason given)"),
        added_reason=row.reason,
    )
    s.delete(row)
    return RedirectResponse(url_of(customer) + "#filters", status_code=303)
