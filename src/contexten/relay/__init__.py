"""Relays: copy the store's committed events to other systems (an outbox; the store stays
the truth).

:mod:`contexten.relay.nats` publishes them to NATS JetStream (the ``nats`` extra; turn it on
with :meth:`App.relay_to_nats <contexten.App.relay_to_nats>` or ``CONTEXTEN_NATS_URL``);
:mod:`contexten.relay.wire` says what a relayed event looks like (subject, CloudEvents JSON).
This package does not import the NATS client itself, so it loads without the extra.
"""

from contexten.relay.wire import (
    CONTENT_TYPE,
    POSITION_HEADER,
    SUBJECT_PREFIX,
    encode_message,
    subject_for,
)

__all__ = ["CONTENT_TYPE", "POSITION_HEADER", "SUBJECT_PREFIX", "encode_message", "subject_for"]
