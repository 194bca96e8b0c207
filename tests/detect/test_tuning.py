"""ルール調整 (issue 4 point 6): disable, exception and level override change what fires.

The shipped provider-wide list is checked entry by entry against the bundled rules (a
tuning that applies to no loaded rule fails, listing its id), and the tunings stored in
the database go through the real pipeline on real corpus EVTX files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from otasuke.db.engine import Database
from otasuke.db.models import Alert, Incident, Organization, RuleTuning
from otasuke.demo.seed import seed_demo
from otasuke.detect.detection import Detection, DetectionSource
from otasuke.detect.engine import Detector
from otasuke.detect.ioc import IocSet
from otasuke.detect.sigma import RuleSet, default_rule_paths
from otasuke.detect.sigma.ruleset import rule_detection
from otasuke.detect.tuning import (
    TuningAction,
    TuningError,
    TuningTable,
    compile_selection,
    make_tuning,
    resolve,
    shipped_tunings,
)
from otasuke.ingest.parsers import ParseContext, get_parser, parser_for_file
from otasuke.ingest.store import Source, accept_records
from otasuke.pipeline import Pipeline
from otasuke.settings import Settings
from otasuke.standard.incident import Severity

ATTACK = Path("evtx/evtx-attack-samples")
LOG_CLEARED = ATTACK / "Defense Evasion/DE_104_system_log_cleared.evtx"
LOG_CLEARED_RULE = "100ef69e-3327-481c-8e5c-6d80d9507556"  # Important Windows Eventlog Cleared
LSASS_DUMP = (
    ATTACK
    / "Credential Access/sysmon_2x10_lsass_with_different_pid_RtlCreateProcessReflection.evtx"
)
LSASS_DUMP_RULE = "9bd012ee-0dff-44d7-84a0-aa698cfd87a3"  # LSASS access by a "dump" tool
JUICY_POTATO = ATTACK / "Privilege Escalation/4624 LT3 AnonymousLogon Localhost - JuicyPotato.evtx"
LOGOFF_RULE = "0badd08f-c6a3-4630-90d3-6875cca440be"  # User Logoff Event (shipped: disabled)


@pytest.fixture(scope="session")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    return RuleSet.load(default_rule_paths(), cache_dir=tmp_path_factory.mktemp("rule-cache"))


@pytest.fixture
def detector(bundled: RuleSet) -> Detector:
    return Detector(bundled, IocSet())


# --- the shipped list ----------------------------------------------------------------


def test_every_shipped_tuning_names_a_bundled_rule(bundled: RuleSet) -> None:
    loaded = {r.id: r for r in bundled.rules}
    missing = [t.rule_id for t in shipped_tunings() if t.bundled and t.rule_id not in loaded]
    assert not missing, f"shipped tunings that apply to no bundled rule: {missing}"
    flagged = [t.rule_id for t in shipped_tunings() if not t.bundled and t.rule_id in loaded]
    assert not flagged, f"entries flagged 'bundled: false' whose rule is bundled: {flagged}"
    assert all(t.reason for t in shipped_tunings()), "every shipped entry says why"


def test_every_shipped_tuning_changes_what_fires(bundled: RuleSet) -> None:
    """Each bundled entry, applied to its rule's own alert, suppresses it or changes its level."""
    loaded = {r.id: r for r in bundled.rules}
    table = TuningTable(shipped_tunings())
    idle = []
    for t in shipped_tunings():
        if not t.bundled:
            continue
        alert = rule_detection(loaded[t.rule_id], {})
        after = table.apply([alert], {}, customer=None)
        if t.action is TuningAction.DISABLE and after:
            idle.append(f"{t.rule_id}: still fires")
        if t.action is TuningAction.LEVEL and (not after or after[0].level == alert.level):
            idle.append(f"{t.rule_id}: level stays {alert.level}")
    assert not idle, "shipped tunings that change nothing:\n" + "\n".join(idle)


def test_shipped_hayabusa_entries_name_hayabusa_rules(corpus: Path) -> None:
    """Entries flagged 'bundled: false' are Hayabusa's own noisy rules: each one exists there."""
    hayabusa = RuleSet.load([corpus / "hayabusa-rules" / "hayabusa"])
    ids = {r.id for r in hayabusa.rules} | {info.id for info, _ in hayabusa.correlations}
    missing = [t.rule_id for t in shipped_tunings() if not t.bundled and t.rule_id not in ids]
    assert not missing, f"flagged entries that are not Hayabusa rules either: {missing}"


def test_shipped_logoff_rule_no_longer_fires_on_real_evtx(corpus: Path, detector: Detector) -> None:
    events = read_evtx(corpus / JUICY_POTATO)
    before = {d.rule_id for e in events for d in detector.detect(e, customer=1)}
    assert LOGOFF_RULE in before
    detector.set_tunings(shipped_tunings())
    after = {d.rule_id for e in events for d in detector.detect(e, customer=1)}
    assert LOGOFF_RULE not in after
    assert before - after == {LOGOFF_RULE}


# --- the model -----------------------------------------------------------------------


def test_customer_overrides_provider_and_exceptions_add_up() -> None:
    shipped = make_tuning("r1", "disable", "noisy")
    provider = make_tuning("r1", "exception", "backup", selection={"Image|endswith": "\\bk.exe"})
    customer = make_tuning("r1", "level", "they want it", level="low")
    [tune] = resolve([[shipped], [provider], [customer]]).values()
    assert not tune.disabled and tune.level == "low" and len(tune.exceptions) == 1
    [tune] = resolve([[shipped], [provider], []]).values()
    assert tune.disabled


def test_provider_wide_rows_stay_with_their_provider() -> None:
    wide = make_tuning("r1", "disable", "ours", customer_id=None, provider_id=10, id=1)
    table = TuningTable([wide], {1: 10, 2: 20})
    alert = Detection(source=DetectionSource.SIGMA, rule_id="r1", title="t", level="high")
    assert table.apply([alert], {}, customer=1) == []
    assert table.apply([alert], {}, customer=2) == [alert]


@pytest.mark.parametrize(
    ("selection", "image", "suppressed"),
    [
        ({"Image|endswith": "\\backup.exe"}, "C:\\Tools\\BACKUP.EXE", True),
        ({"Image|endswith": "\\backup.exe"}, "C:\\Tools\\backup.exe.bad", False),
        ({"Image|contains": ["veeam", "acronis"]}, "C:\\Program Files\\Veeam\\a.exe", True),
        ({"Image": "C:\\Tools\\x*"}, "C:\\Tools\\x.exe", True),  # \\* would escape the *
        ({"Image|startswith": "D:\\"}, "C:\\Tools\\x.exe", False),
    ],
)
def test_exception_selection_uses_sigma_modifiers(
    selection: dict[str, object], image: str, suppressed: bool
) -> None:
    from otasuke.detect.sigma.view import EventView

    assert compile_selection(selection)(EventView({"Image": image})) is suppressed


@pytest.mark.parametrize(
    ("action", "extra", "field"),
    [
        ("mute", {}, "action"),
        ("level", {"level": "urgent"}, "level"),
        ("exception", {"selection": {}}, "selection"),
        ("exception", {"selection": {"Image|nosuchmodifier": "x"}}, "selection"),
        ("exception", {"selection": {"Image": {"nested": 1}}}, "selection"),
    ],
)
def test_bad_tunings_say_which_field(action: str, extra: dict[str, object], field: str) -> None:
    with pytest.raises(TuningError) as err:
        make_tuning("r1", action, "why", **extra)
    assert err.value.field == field


# --- through the real pipeline -------------------------------------------------------


def read_evtx(path: Path) -> list[object]:
    parser = parser_for_file(path)
    return [get_parser(r.format).parse(r.raw, ParseContext()) for r in parser.read_file(path)]


@pytest.fixture
def world(sqlite_db: Database) -> Iterator[dict[str, Organization]]:
    with sqlite_db.session() as s:
        seed_demo(s)
        orgs = {
            o.slug: o
            for o in s.scalars(select(Organization).where(Organization.kind == "customer"))
        }
        s.expunge_all()
    yield orgs


def import_evtx(db: Database, customer: Organization, path: Path) -> None:
    with db.session() as s:
        source = Source(customer_id=customer.id, sensor_id=None, sensor_name="test")
        result = accept_records(s, source, parser_for_file(path).read_file(path))
        assert not result.rejected


def add_tuning(
    db: Database, customer: Organization | None, provider_id: int, **values: object
) -> None:
    with db.session() as s:
        s.add(
            RuleTuning(
                provider_id=provider_id,
                customer_id=customer.id if customer else None,
                created_by="test@example.jp",
                **values,
            )
        )


def run(db: Database, settings: Settings, detector: Detector) -> None:
    with db.session() as s:
        detector.refresh_tunings(s)  # what Pipeline.process_pending does before each batch
    Pipeline(db, settings, detector).process_pending()


def alerts_of(db: Database, customer: Organization, rule_id: str) -> list[Alert]:
    with db.session() as s:
        rows = s.scalars(
            select(Alert).where(Alert.customer_id == customer.id, Alert.rule_id == rule_id)
        ).all()
        s.expunge_all()
        return list(rows)


def severity_of(db: Database, customer: Organization, rule_id: str) -> str:
    with db.session() as s:
        incident = s.scalar(
            select(Incident).where(
                Incident.customer_id == customer.id, Incident.family == f"sigma:{rule_id}"
            )
        )
        assert incident is not None
        return incident.severity


def test_level_override_turns_serious_into_info_for_that_customer_only(
    corpus: Path,
    sqlite_db: Database,
    settings: Settings,
    detector: Detector,
    world: dict[str, Organization],
) -> None:
    tokai, sakura = world["tokai-parts"], world["sakura-clinic"]
    add_tuning(
        sqlite_db,
        tokai,
        tokai.provider_id or 0,
        rule_id=LOG_CLEARED_RULE,
        action="level",
        level="informational",
        reason="保守業者が毎月ログを消去する",
    )
    for customer in (tokai, sakura):
        import_evtx(sqlite_db, customer, corpus / LOG_CLEARED)
    run(sqlite_db, settings, detector)
    assert severity_of(sqlite_db, sakura, LOG_CLEARED_RULE) == Severity.SERIOUS  # 重大
    assert severity_of(sqlite_db, tokai, LOG_CLEARED_RULE) == Severity.INFO  # 情報
    [alert] = alerts_of(sqlite_db, tokai, LOG_CLEARED_RULE)
    assert alert.level == "informational"


def test_provider_wide_disable_means_no_alert(
    corpus: Path,
    sqlite_db: Database,
    settings: Settings,
    detector: Detector,
    world: dict[str, Organization],
) -> None:
    tokai = world["tokai-parts"]
    add_tuning(
        sqlite_db,
        None,
        tokai.provider_id or 0,
        rule_id=LOG_CLEARED_RULE,
        action="disable",
        reason="全顧客で誤検知",
    )
    import_evtx(sqlite_db, tokai, corpus / LOG_CLEARED)
    run(sqlite_db, settings, detector)
    assert alerts_of(sqlite_db, tokai, LOG_CLEARED_RULE) == []


def test_exception_suppresses_only_matching_events(
    corpus: Path,
    sqlite_db: Database,
    settings: Settings,
    detector: Detector,
    world: dict[str, Organization],
) -> None:
    tokai = world["tokai-parts"]
    import_evtx(sqlite_db, tokai, corpus / LSASS_DUMP)
    add_tuning(
        sqlite_db,
        tokai,
        tokai.provider_id or 0,
        rule_id=LSASS_DUMP_RULE,
        action="exception",
        selection={"SourceImage|endswith": "\\procdump.exe"},
        reason="IT 担当者の procdump (32 bit) 調査",
    )
    run(sqlite_db, settings, detector)
    images = sorted(a.matched["SourceImage"] for a in alerts_of(sqlite_db, tokai, LSASS_DUMP_RULE))
    assert len(images) == 2
    assert all(i.endswith("\\procdump64.exe") for i in images)


def test_refresh_reads_the_database_only_when_it_changed(
    sqlite_db: Database, detector: Detector, world: dict[str, Organization]
) -> None:
    tokai = world["tokai-parts"]
    with sqlite_db.session() as s:
        assert detector.refresh_tunings(s) is True
        assert detector.refresh_tunings(s) is False
    add_tuning(sqlite_db, tokai, tokai.provider_id or 0, rule_id="x", action="disable", reason="r")
    with sqlite_db.session() as s:
        assert detector.refresh_tunings(s) is True
        row = s.scalar(select(RuleTuning))
        assert row is not None
        s.delete(row)
    with sqlite_db.session() as s:
        assert detector.refresh_tunings(s) is True
