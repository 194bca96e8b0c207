"""Otasuke: an open platform for running IPA's サイバーセキュリティお助け隊サービス."""

__version__ = "0.1.0"
