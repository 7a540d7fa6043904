#!/usr/bin/env bash
# Makes sure the brokers the source tests use answer on loopback (tests/sources.rs):
# NATS with JetStream on 4222, RabbitMQ on 5672 and Mosquitto (MQTT) on 1883. A broker that is not
# answering is started (and installed from Debian's packages if it is missing),
# then waited for. Used by scripts/test.sh, so README's test command works on a
# new machine.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
installed_index=no
install() {
  if [ $installed_index = no ]; then
    $sudo apt-get update -qq
    installed_index=yes
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o Dpkg::Use-Pty=0 "$@" > /dev/null
}

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    if answers "$port"; then return 0; fi
    sleep 0.5
  done
  echo "error: $name does not answer on 127.0.0.1:$port after 60 s; see its log" >&2
  return 1
}

if ! answers 4222; then
  echo "==> starting NATS (JetStream) on 127.0.0.1:4222"
  command -v nats-server > /dev/null || install nats-server
  $sudo mkdir -p /var/lib/nats-server
  $sudo start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for NATS 4222
fi

if ! answers 5672; then
  echo "==> starting RabbitMQ on 127.0.0.1:5672"
  command -v rabbitmq-server > /dev/null || install rabbitmq-server
  $sudo rabbitmq-server -detached
  wait_for RabbitMQ 5672
fi

if ! answers 1883; then
  echo "==> starting Mosquitto on 127.0.0.1:1883"
  command -v mosquitto > /dev/null || install mosquitto
  if [ -f /etc/mosquitto/mosquitto.conf ] && grep -q "^listener 1883" /etc/mosquitto/mosquitto.conf; then
    $sudo mosquitto -d -c /etc/mosquitto/mosquitto.conf
  else
    # Debian's default file listens on localhost without anonymous access; the tests
    # need an anonymous listener on loopback only.
    conf=$(mktemp)
    printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location /tmp/\n' > "$conf"
    $sudo mosquitto -d -c "$conf"
  fi
  wait_for Mosquitto 1883
fi
