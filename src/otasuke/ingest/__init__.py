"""取り込み (ingest): receivers, durable storage before acknowledgement, parsers."""
