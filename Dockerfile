# One image for every linewatch service; the compose service picks the command (`linewatch service NAME`).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.lock pyproject.toml ./
# The runtime lock only: no test, lint or dev-broker packages in the image.
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY services ./services
COPY schemas ./schemas
COPY deploy/plant ./deploy/plant
COPY deploy/alerter ./deploy/alerter
RUN pip install --no-cache-dir --no-deps -e . \
    && groupadd --system --gid 10001 linewatch && useradd --system --uid 10001 --gid 10001 --no-create-home linewatch \
    && install -d -o 10001 -g 10001 /var/lib/linewatch
# /var/lib/linewatch: the gateway's store-and-forward buffer (a volume takes the directory's owner).
# Numeric, so that Kubernetes can check runAsNonRoot (a name it cannot resolve is refused).
USER 10001
ENTRYPOINT ["linewatch"]
