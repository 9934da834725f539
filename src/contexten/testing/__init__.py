"""The public test kit: in-memory app, virtual clock, event capture, conformance suites."""
