"""やさしい説明 (REQ-EASY): what happened and what to do, in words for people with no IT staff.

A customer never sees a rule title alone: each incident gets a plain sentence
chosen from its detections (ATT&CK tactic for Sigma rules, the detector
otherwise), what the provider is doing, and what the customer should do now.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from otasuke.i18n import _
from otasuke.standard.incident import Severity

TACTIC_ORDER = (
    "impact",
    "exfiltration",
    "command-and-control",
    "credential-access",
    "lateral-movement",
    "initial-access",
    "privilege-escalation",
    "persistence",
    "defense-evasion",
    "execution",
    "collection",
    "discovery",
)


def _tactic_sentences() -> dict[str, str]:
    return {
        "impact": _(
            "Something tried to destroy or encrypt data (as ransomware does) or to stop "
            "the PC from working."
        ),
        "exfiltration": _("Company data may have been sent outside."),
        "command-and-control": _(
            "The PC communicated with a server that attackers use to control infected machines."
        ),
        "credential-access": _(
            "Something tried to steal passwords or other sign-in information from this PC."
        ),
        "lateral-movement": _(
            "Something tried to spread from this PC to other PCs in your office."
        ),
        "initial-access": _("Someone tried to get into your network or a PC from outside."),
        "privilege-escalation": _("A program tried to gain administrator rights on the PC."),
        "persistence": _(
            "Something set itself up to start again automatically, as malware does to stay on a PC."
        ),
        "defense-evasion": _(
            "Something tried to hide itself or to switch off the PC's protection."
        ),
        "execution": _("A program was started in a way that attackers often use."),
        "collection": _("Data on the PC was being collected, possibly to be taken away."),
        "discovery": _(
            "Someone looked around the PC or the office network, as attackers do before an attack."
        ),
    }


@dataclass(frozen=True, slots=True)
class Explanation:
    what_happened: str
    what_we_do: str
    what_you_do: tuple[str, ...]


def tactics_of(tags: Iterable[str]) -> set[str]:
    """ATT&CK tactics named in Sigma tags (attack.credential-access or attack.credential_access)."""
    out = set()
    for tag in tags:
        t = tag.lower().replace("_", "-")
        if t.startswith("attack.") and t[7:] in TACTIC_ORDER:
            out.add(t[7:])
    return out


def primary_tactic(tags: Iterable[str]) -> str | None:
    """The most consequential ATT&CK tactic among the tags (TACTIC_ORDER), if any."""
    tactics = tactics_of(tags)
    return next((t for t in TACTIC_ORDER if t in tactics), None)


def explain(
    severity: Severity, sources: Iterable[str], tags: Iterable[str], title: str
) -> Explanation:
    """The plain explanation of an incident from its detections' sources and tags."""
    sources = set(sources)
    tactics = tactics_of(tags)
    sentences = _tactic_sentences()
    if "ioc" in sources:
        happened = _(
            "A PC or device in your office communicated with a server known to be used by malware."
        )
    elif tactics:
        happened = sentences[next(t for t in TACTIC_ORDER if t in tactics)]
    elif sources & {"suricata", "fortigate"}:
        happened = _("Your network monitoring device (UTM) detected suspicious traffic.")
    else:
        happened = _("Suspicious activity was detected.")
    if severity is Severity.SERIOUS:
        return Explanation(
            what_happened=happened,
            what_we_do=_(
                "Our analysts are looking into it now and will contact you with the "
                "next steps. If needed, a technician can come to your office or help "
                "you remotely."
            ),
            what_you_do=(
                _(
                    "Do not switch the PC off. Unplug its network cable or turn off its Wi-Fi, so "
                    "that the damage cannot spread and the evidence stays for the investigation."
                ),
                _("Do not enter passwords on that PC until we tell you it is safe."),
                _("If you notice anything unusual, call the help desk."),
            ),
        )
    if severity is Severity.DEFENDED:
        return Explanation(
            what_happened=happened,
            what_we_do=_("Your security device already blocked it. We keep watching."),
            what_you_do=(_("Nothing to do now. It will be in your weekly report."),),
        )
    return Explanation(
        what_happened=happened,
        what_we_do=_("We recorded it and keep watching."),
        what_you_do=(_("Nothing to do now. It will be in your weekly report."),),
    )
