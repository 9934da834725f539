"""The bus: subscriptions, the dispatcher that delivers stored events, dead letters."""

from contexten.bus.consumer import ConsumerState, ConsumerStatus
from contexten.bus.context import HandlerContext
from contexten.bus.dead_letters import DeadLetter, DeadLetterQueue, DeadLetterStatus
from contexten.bus.dispatcher import Dispatcher
from contexten.bus.health import HealthReport, StoreHealth, SubscriptionHealth
from contexten.bus.partitions import LeaseSettings, partition_of, subscription_checkpoint
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
from contexten.bus.workers import WorkersReport, workers_report

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
    "LeaseSettings",
    "Predicate",
    "StartFrom",
    "StoreHealth",
    "Subscription",
    "SubscriptionHealth",
    "WorkersReport",
    "default_key",
    "default_stream",
    "is_system_stream",
    "partition_of",
    "subscription_checkpoint",
    "workers_report",
]
