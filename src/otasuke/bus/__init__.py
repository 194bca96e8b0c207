"""イベントバス (event bus): NATS JetStream between receivers and detection workers.

Used only when scaled out (``OTASUKE_BUS_URL`` set): receivers publish spool records in
batches (:mod:`otasuke.ingest.receivers.publish`), ``otasuke worker`` processes on any
machine consume them with one shared durable pull consumer (:mod:`otasuke.bus.consume`)
and acknowledge after their PostgreSQL commit. See docs/operator/scale-out.md.
"""

from otasuke.bus.batch import BusRecord, decode_batch, encode_batch
from otasuke.bus.jetstream import BusConfig

__all__ = ["BusConfig", "BusRecord", "decode_batch", "encode_batch"]
