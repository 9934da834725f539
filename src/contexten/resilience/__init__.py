"""Resilience: retry policies, circuit breakers, rate limiters, bulkheads, supervision."""

from contexten.resilience.retry import RetryPolicy, is_retryable

__all__ = ["RetryPolicy", "is_retryable"]
