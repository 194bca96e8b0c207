"""Receivers (受信): network listeners that write to the spool before they acknowledge.

- :mod:`.syslog`: UDP and TCP syslog (``start_syslog`` starts both and the drain);
- :mod:`.framing`: RFC 6587 framing of TCP streams;
- :mod:`.headers`: RFC 3164 / RFC 5424 headers;
- :mod:`.drain`: spool → store, at-least-once, idempotent by event id.

docs/operator/ingest.md says what each receiver's acknowledgement means.
"""
