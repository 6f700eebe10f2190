#!/usr/bin/env bash
# One Wharf (`wharf up`, local filesystem with fsync) and Debian's Mosquitto side by side on
# this machine, measured by the same load generator (`wharf-load mqtt`, rumqttc), rounds
# interleaved. Each round prints, per broker, the load generator's figures and the broker's
# CPU time per message (user + system, from /proc, over the round).
#
#   tools/load/vs-mosquitto.sh WHARF WHARF_LOAD ROUNDS [wharf-load mqtt args...]
#   tools/load/vs-mosquitto.sh target/release/wharf target/release/wharf-load 3 --duration 10s
#   tools/load/vs-mosquitto.sh ... 3 --rate 10000 --duration 10s     # latency at 10k msg/s
#
# Needs `mosquitto` (Debian package `mosquitto`). Ports: MQTT_PORT (Wharf, default 18831) and
# MQTT_PORT + 1 (Mosquitto). Every round starts both brokers afresh (Wharf on a new store).
# The stores are deleted only at exit: on an ext4 without a journal (this machine's), creating a
# file costs ~7x more CPU for a minute after thousands were deleted, which would tax each
# Wharf round for the store the one before it deleted.
# WHARF_CONFIGS="a.toml b.toml" measures Wharf once per settings file in each round (`wharf
# --config`; "-" is the defaults), so settings compare side by side too.
set -euo pipefail
wharf=$1
load=$2
rounds=$3
shift 3
wport=${MQTT_PORT:-18831}
mport=$((wport + 1))
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 0\nmax_queued_messages 100000\n' \
  "$mport" >"$dir/mosquitto.conf"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

measure() { # name port
  local name=$1 port=$2 before after out
  shift 2
  before=$(cpu_ticks "$pid")
  out=$("$load" mqtt --port "$port" "$@" 2>"$dir/load.err" | tail -1) || {
    cat "$dir/load.err" >&2
    return 1
  }
  after=$(cpu_ticks "$pid")
  python3 - "$name" "$out" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
name, out, before, after, hz = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu_s = (after - before) / hz
msgs = max(out.get("received", 0), 1)
lat = out.get("latency_ms", {})
print(json.dumps({"broker": name, "acked_per_s": round(out.get("acked", 0) / out["seconds"]),
                  "received_per_s": out.get("received_per_s"), "latency_p50_ms": lat.get("p50"),
                  "latency_p99_ms": lat.get("p99"), "cpu_s": cpu_s,
                  "cpu_us_per_msg": round(cpu_s * 1e6 / msgs, 1)}))
PY
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  n=0
  for config in ${WHARF_CONFIGS:--}; do
    n=$((n + 1))
    store="$dir/store-$round-$n"
    config_args=()
    [ "$config" != - ] && config_args=(--config "$config")
    "$wharf" "${config_args[@]}" up --store "file://$store" --mqtt "127.0.0.1:$wport" \
      --amqp off >"$dir/wharf.log" 2>&1 &
    pid=$!
    wait_port "$wport"
    measure "wharf${config_args[1]:+ $config}" "$wport" "$@"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
  "$mosquitto_bin" -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
  pid=$!
  wait_port "$mport"
  measure mosquitto "$mport" "$@"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
done
