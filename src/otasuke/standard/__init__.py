"""基準 (the standard): IPA's お助け隊サービス基準 2.0 as pure code.

No I/O, no clock, no imports from web/ or db/ (tests/test_layers.py guards it).
"""
