from driftline.streams.cli import app

app()
