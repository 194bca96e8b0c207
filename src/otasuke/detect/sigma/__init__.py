"""Sigma ルール評価 (Sigma rule evaluation) for Windows events.

pySigma parses the rules and applies the processing pipelines; evaluation is ours
(closures over a lowercased view of the event, an index by Channel/EventID and an
Aho-Corasick literal prefilter). Entry points: :class:`RuleSet` and
:func:`default_rule_paths`.
"""

from __future__ import annotations

from otasuke.detect.sigma.rules import RuleInfo, RuleRefusal
from otasuke.detect.sigma.ruleset import RuleSet, default_cache_dir, default_rule_paths

__all__ = ["RuleInfo", "RuleRefusal", "RuleSet", "default_cache_dir", "default_rule_paths"]
