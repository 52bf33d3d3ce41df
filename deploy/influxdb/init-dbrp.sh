#!/bin/sh
# Runs once when the influxdb container initialises: InfluxQL database "linewatch" -> bucket "linewatch", and
# the least-privileged users of the v1 API: the writer may only write, Grafana may only read, the alerter reads
# alarm events and writes its KPIs.
set -eu
bucket_id=$(influx bucket list --name "${DOCKER_INFLUXDB_INIT_BUCKET}" --hide-headers | cut -f1)
influx v1 dbrp create --db linewatch --rp autogen --bucket-id "$bucket_id" --default
influx v1 auth create --username linewatch-writer --password "$INFLUX_WRITER_PASSWORD" --write-bucket "$bucket_id"
influx v1 auth create --username grafana --password "$INFLUX_GRAFANA_PASSWORD" --read-bucket "$bucket_id"
influx v1 auth create --username linewatch-alerter --password "$INFLUX_ALERTER_PASSWORD" --read-bucket "$bucket_id" \
  --write-bucket "$bucket_id"
