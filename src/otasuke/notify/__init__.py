"""通知 (notification): channels and messages, Japanese first."""
