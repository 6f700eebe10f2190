#!/usr/bin/env bash
# Several `wharf adapter` processes on one store behind one port (--reuse-port: the kernel
# spreads the clients over them), MQTT QoS 1 publishers and one subscriber through that port,
# measured by `wharf-load mqtt` (publish -> delivery latency, acknowledged and received counts).
#
#   tools/load/adapters.sh WHARF WHARF_LOAD N STORE_URL [wharf-load mqtt args...]
#   tools/load/adapters.sh target/release/wharf target/release/wharf-load 4 \
#     "s3://bucket/run1?endpoint=http://127.0.0.1:4566" --publishers 8 --rate 25 --duration 20s
#
# Use a fresh store prefix per run. Credentials come from the environment (AWS_*).
set -euo pipefail
wharf=$1
load=$2
n=$3
store=$4
shift 4
port=${PORT:-18830}
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
for i in $(seq 1 "$n"); do
  "$wharf" adapter --store "$store" --reuse-port --amqp off --mqtt "127.0.0.1:$port" \
    >"$dir/adapter-$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
sleep 2
"$load" mqtt --port "$port" "$@"
