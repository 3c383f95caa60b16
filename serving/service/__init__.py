"""The reference inference service: a torch model behind FastAPI, monitored through the SDK, rolled back by
driftline (``driftline serve``; ``create_app`` builds the app)."""
