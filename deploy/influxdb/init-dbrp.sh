#!/bin/sh
# Runs once when the influxdb container initialises: InfluxQL database "linewatch" -> bucket "linewatch".
set -eu
bucket_id=$(influx bucket list --name "${DOCKER_INFLUXDB_INIT_BUCKET}" --hide-headers | cut -f1)
influx v1 dbrp create --db linewatch --rp autogen --bucket-id "$bucket_id" --default
