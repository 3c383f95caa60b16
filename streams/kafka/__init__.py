"""Kafka plumbing: clients, delivery ledger, topics, the local broker."""
