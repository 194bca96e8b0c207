"""インシデント: alerts grouped into incidents, severity, the SLA clock, the five steps."""
