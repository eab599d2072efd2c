# Seedgate: one image for the gateway (and its migrations).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/seedgate
RUN useradd --system --uid 10001 --home /srv/seedgate seedgate

COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY config.example.yaml ./
RUN pip install --upgrade pip && pip install . && mkdir -p /var/lib/seedgate && chown seedgate /var/lib/seedgate

USER seedgate
ENV SEEDGATE_CONFIG=/srv/seedgate/config.example.yaml \
    SEEDGATE_DATABASE_URL=sqlite+aiosqlite:////var/lib/seedgate/seedgate.db \
    SEEDGATE_HOST=0.0.0.0
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"
STOPSIGNAL SIGTERM
CMD ["seedgate", "serve"]
