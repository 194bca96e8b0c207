"""検知 (detection): Sigma rules, IOC lists, device alerts passed through, heuristics."""
