#!/usr/bin/env bash
# What idle tenants cost: one `wharf adapter` serving N tenants (the default one and N-1 named
# by a users file), no clients, on a private moto server whose request log is counted.
# Prints requests/s over WINDOW seconds after WARM seconds, in all and per tenant, and the
# kinds of request.
#
#   tools/load/idle-tenants.sh BIN N [PORT]
#   WARM=40 tools/load/idle-tenants.sh target/release/wharf 100
#
# Needs moto_server (tests/run.sh installs it into ~/.cache/wharf/venv).
set -euo pipefail
bin=$1
n=$2
port=${3:-4570}
warm=${WARM:-20}
window=${WINDOW:-30}
moto=${MOTO:-$HOME/.cache/wharf/venv/bin/moto_server}
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$moto" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -s "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.2; done
curl -s -X PUT "http://127.0.0.1:$port/idle" >/dev/null
hash=$(echo x | "$bin" user hash)
args=()
if [ "$n" -gt 1 ]; then
  for i in $(seq 1 $((n - 1))); do
    printf '[[user]]\nname = "u%s"\npassword_hash = "%s"\ntenant = "t%s"\n' "$i" "$hash" "$i"
  done >"$dir/users.toml"
  args=(--users "$dir/users.toml")
fi
AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 \
  "$bin" adapter --store "s3://idle?endpoint=http://127.0.0.1:$port" \
  --mqtt "127.0.0.1:$((port + 10))" --amqp "127.0.0.1:$((port + 11))" "${args[@]}" \
  >"$dir/wharf.log" 2>&1 &
pids+=($!)
sleep "$warm"
a=$(wc -l <"$dir/moto.log")
sleep "$window"
b=$(wc -l <"$dir/moto.log")
python3 -c "r=($b-$a)/$window; print(f'tenants={$n} requests/s={r:.2f} per tenant={r/$n:.3f}')"
tail -n +"$((a + 1))" "$dir/moto.log" | head -n "$((b - a))" |
  grep -oE '(GET|PUT|HEAD|DELETE|POST) /idle[^ ?]*' |
  sed -E 's/[0-9]{5,}/N/g; s#/idle/tenants/[^/]+#/idle/tenants/T#' | sort | uniq -c | sort -rn | head -8
