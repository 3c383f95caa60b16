"""Replaying a retained range through a candidate configuration."""
