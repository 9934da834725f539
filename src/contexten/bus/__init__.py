"""The bus: subscriptions, the dispatcher that delivers stored events, dead letters."""

from contexten.bus.consumer import ConsumerState, ConsumerStatus
from contexten.bus.context import HandlerContext
from contexten.bus.dead_letters import DeadLetter, DeadLetterQueue, DeadLetterStatus
from contexten.bus.dispatcher import Dispatcher
from contexten.bus.health import HealthReport, StoreHealth, SubscriptionHealth
from contexten.bus.streams import default_stream
from contexten.bus.subscription import (
    Handler,
    KeyFunction,
    Predicate,
    StartFrom,
    Subscription,
    default_key,
    is_system_stream,
)

__all__ = [
    "ConsumerState",
    "ConsumerStatus",
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLetterStatus",
    "Dispatcher",
    "Handler",
    "HandlerContext",
    "HealthReport",
    "KeyFunction",
    "Predicate",
    "StartFrom",
    "StoreHealth",
    "Subscription",
    "SubscriptionHealth",
    "default_key",
    "default_stream",
    "is_system_stream",
]
