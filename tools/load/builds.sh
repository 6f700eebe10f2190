#!/usr/bin/env bash
# Two (or more) builds of Wharf side by side on this machine: each round starts every build's
# `wharf up` afresh on a new local-filesystem store and runs the same `wharf-load` loads
# against it, rounds interleaved (build A, build B, build A, ...), so that a change is
# measured against what it changed under the same conditions.
#
#   tools/load/builds.sh ROUNDS WHARF_LOAD DIR_A DIR_B...
#   tools/load/builds.sh 3 /root/bins/new/wharf-load /root/bins/old /root/bins/new
#
# Each DIR holds a `wharf` binary. KINDS (default "q1 q0x16 amqp") picks the loads:
#   q1     MQTT QoS 1, 1 publisher -> 1 subscriber, acknowledged/s   (mqtt --qos 1)
#   q0x16  MQTT QoS 0, 16 publishers -> 1 subscriber, delivered/s    (mqtt --qos 0 --publishers 16)
#   amqp   AMQP queue, 1 sender -> 1 receiver, accepted/s            (amqp)
#   idle   10,000 idle MQTT connections, KiB RSS each                (mqtt-idle)
# DURATION (default 10s). Prints one JSON line per build, load and round.
set -euo pipefail
rounds=$1
load=$2
shift 2
duration=${DURATION:-10s}
kinds=${KINDS:-q1 q0x16 amqp}
mport=${MQTT_PORT:-18841}
aport=$((mport + 1))
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  return 1
}

run() { # build kind
  local build=$1 kind=$2 out
  case $kind in
    q1) out=$("$load" mqtt --port "$mport" --qos 1 --duration "$duration" 2>/dev/null | tail -1)
        python3 -c 'import json,sys; o=json.loads(sys.argv[1]); print(round(o["acked"]/o["seconds"]))' "$out" ;;
    q0x16) out=$("$load" mqtt --port "$mport" --qos 0 --publishers 16 --duration "$duration" 2>/dev/null | tail -1)
        python3 -c 'import json,sys; o=json.loads(sys.argv[1]); print(round(o["received_per_s"]))' "$out" ;;
    amqp) out=$("$load" amqp --url "amqp://127.0.0.1:$aport" --queue q --duration "$duration" 2>/dev/null | tail -1)
        python3 -c 'import json,sys; o=json.loads(sys.argv[1]); print(round(o.get("accepted_per_s") or o.get("received_per_s")))' "$out" ;;
    idle) out=$("$load" mqtt-idle --port "$mport" --connections 10000 --pid "$pid" 2>/dev/null | tail -1)
        python3 -c 'import json,sys; o=json.loads(sys.argv[1]); print(o.get("kib_per_connection"))' "$out" ;;
  esac
}

for round in $(seq 1 "$rounds"); do
  for kind in $kinds; do
    for build in "$@"; do
      store="$dir/store-$round-$kind-$(basename "$build")"
      WHARF_HTTP=off RUST_LOG=warn "$build/wharf" up --store "file://$store" \
        --mqtt "127.0.0.1:$mport" --amqp "127.0.0.1:$aport" >"$dir/wharf.log" 2>&1 &
      pid=$!
      wait_port "$mport"
      wait_port "$aport"
      value=$(run "$build" "$kind" || echo error)
      echo "{\"round\": $round, \"load\": \"$kind\", \"build\": \"$build\", \"value\": \"$value\"}"
      kill "$pid"
      wait "$pid" 2>/dev/null || true
      pid=
    done
  done
done
