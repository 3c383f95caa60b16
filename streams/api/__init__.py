"""The monitoring API and the web dashboard it serves (FastAPI), over the ClickHouse store and the alert topics."""
