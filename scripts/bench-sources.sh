#!/usr/bin/env bash
# Issue 14's benchmark: the same EVENTS (default 1,000,000) seed-shaped events
# through HTTP and through each broker source (Kafka, NATS JetStream, RabbitMQ, MQTT) to
# stored-and-counted, in one run; prints events/s, the ratio to HTTP and the CPU
# seconds of the daemon, MongoDB and the broker. BATCH (default 100) events per
# request or message; PATHS (default kafka,nats,amqp,mqtt) picks the brokers
# (Kafka: librdkafka's mock cluster inside the benchmark program). Starts the
# brokers if they are not answering.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/standin-venv
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r tests/standin/requirements.txt; }
export MONGOPULSE_STANDIN_PYTHON="$PWD/$venv/bin/python"
scripts/brokers.sh
cargo bench --bench source_throughput -q
