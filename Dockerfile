FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY driftline driftline
COPY streams streams
COPY serving serving
COPY detectors detectors
COPY schemas schemas
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
