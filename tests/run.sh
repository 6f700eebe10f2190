#!/usr/bin/env bash
# Run every Wharf test on this machine, the way CI does.
#
# Installs Debian's mosquitto-clients, chromium and chromium-driver if missing (as root), the pinned Node.js test clients
# (tests/node: rhea) and the pinned Python test tools into a virtualenv on first use
# (ministack, moto, pyarrow, Paho, Qpid Proton, prometheus_client, Selenium; see
# tests/python/requirements.txt),
# starts ministack and moto on free ports on
# 127.0.0.1, runs `cargo test --workspace` against them (extra arguments are passed to cargo
# test), and stops the servers on exit.
#
#   bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Third-party MQTT clients (Debian mosquitto-clients) for the adapter's end-to-end tests.
if ! command -v mosquitto_pub >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/run.sh: installing mosquitto-clients"
    apt-get update -qq && apt-get install -y -qq mosquitto-clients >/dev/null
  else
    echo "tests/run.sh: mosquitto_pub not found; install Debian's mosquitto-clients (MQTT tests are skipped without it)" >&2
  fi
fi

# A real browser for the console test (Debian's chromium and its driver, driven by Selenium).
if [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/run.sh: installing chromium and chromium-driver"
    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "tests/run.sh: /usr/bin/chromedriver not found; install Debian's chromium and chromium-driver (the console test is skipped without them)" >&2
  fi
fi

# Third-party Node.js clients (rhea for AMQP), pinned in tests/node/package-lock.json.
if command -v npm >/dev/null; then
  if ! cmp -s tests/node/package-lock.json tests/node/node_modules/.wharf-stamp 2>/dev/null; then
    echo "tests/run.sh: installing tests/node packages"
    (cd tests/node && npm ci --silent --no-audit --no-fund)
    cp tests/node/package-lock.json tests/node/node_modules/.wharf-stamp
  fi
else
  echo "tests/run.sh: npm not found; install Node.js (AMQP tests with rhea are skipped without it)" >&2
fi

venv="${WHARF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/wharf/venv}"
requirements=tests/python/requirements.txt
stamp="$venv/.requirements"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  echo "tests/run.sh: installing test tools into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
logs="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

ministack_port=$(free_port)
GATEWAY_PORT=$ministack_port BIND_HOST=127.0.0.1 SERVICES=s3 IOT_MTLS_ENABLED=0 \
  "$venv/bin/ministack" >"$logs/ministack.log" 2>&1 &
pids+=($!)
moto_port=$(free_port)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$logs/moto.log" 2>&1 &
pids+=($!)

# Wait for both, and create the test bucket (an unsigned PUT /<bucket> does it).
for port in "$ministack_port" "$moto_port"; do
  "$venv/bin/python" - "$port" <<'PY'
import sys, time, urllib.request
port = sys.argv[1]
deadline = time.time() + 90
while True:
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/wharf-test", method="PUT")
        urllib.request.urlopen(req, timeout=2).read()
        break
    except Exception as e:
        if time.time() > deadline:
            sys.exit(f"S3-compatible server on port {port} did not come up: {e}")
        time.sleep(0.3)
PY
done
echo "tests/run.sh: ministack on 127.0.0.1:$ministack_port, moto on 127.0.0.1:$moto_port (logs in $logs)"

export AWS_ACCESS_KEY_ID=wharf-test AWS_SECRET_ACCESS_KEY=wharf-test AWS_REGION=us-east-1
unset AWS_ENDPOINT_URL AWS_SESSION_TOKEN AWS_PROFILE
export WHARF_TEST_S3_URLS="s3://wharf-test?endpoint=http://127.0.0.1:$ministack_port s3://wharf-test?endpoint=http://127.0.0.1:$moto_port"
export WHARF_PYTHON="$venv/bin/python"
# The end-to-end tests run target/<profile>/wharf, which `cargo test` does not rebuild.
cargo build -p wharf --bins --locked
cargo test --workspace --locked "$@"
