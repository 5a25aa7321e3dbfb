"""pgshift: zero-downtime migration orchestrator for PostgreSQL."""

__version__ = "0.1.0"
