"""Configuration: the settings object and the per-model monitoring configuration."""
