# Sourced by the benchmark scripts that need MongoDB: keeps MONGODB_URI if it is
# set, else starts the stand-in (tests/standin, in target/standin-venv) on a free
# loopback port, exports MONGODB_URI for it and STANDIN_PID, and stops it on exit.
# A script that sets its own EXIT trap calls stop_standin from it.
venv=target/standin-venv
STANDIN_PID=
stop_standin() { [ -z "$STANDIN_PID" ] || kill "$STANDIN_PID" 2>/dev/null || true; }
if [ -z "${MONGODB_URI:-}" ]; then
  [ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r tests/standin/requirements.txt; }
  coproc STANDIN { exec "$venv/bin/python" tests/standin/standin.py --port 0 2>/dev/null; }
  trap stop_standin EXIT
  read -r line <&"${STANDIN[0]}"
  export MONGODB_URI="mongodb://${line#LISTENING }/?replicaSet=rs0"
  echo "stand-in at $MONGODB_URI" >&2
fi
