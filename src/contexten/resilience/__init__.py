"""Resilience: retry policies, circuit breakers, rate limiters, bulkheads, supervision."""

from contexten.resilience.bulkhead import Bulkhead, BulkheadStats
from contexten.resilience.circuit_breaker import (
    BreakerConfig,
    BreakerHealth,
    BreakerState,
    CircuitBreaker,
)
from contexten.resilience.rate_limit import AdaptiveRateLimiter, RateLimitUpdate, TokenBucket
from contexten.resilience.retry import RetryPolicy, is_retryable

__all__ = [
    "AdaptiveRateLimiter",
    "BreakerConfig",
    "BreakerHealth",
    "BreakerState",
    "Bulkhead",
    "BulkheadStats",
    "CircuitBreaker",
    "RateLimitUpdate",
    "RetryPolicy",
    "TokenBucket",
    "is_retryable",
]
