#!/usr/bin/env bash
# Many log writers on one store, side by side: N `wharf-load log` processes at once on a fresh
# local store with S3-like latency added to every request, each offering RATE/N records/s.
# Prints one line per writer (ack p50/p99, store requests/s, how long after their append the
# other writers' records were readable here) and the medians over the writers.
#
#   tools/load/writers.sh BIN N [RATE] [extra wharf-load args...]
#   tools/load/writers.sh target/release/wharf-load 4 2000 --flush-interval 275ms
#
# Defaults follow the log issue's measurement: 4 producers per process, 15 s, 20-100 ms per
# request. OBSERVE=0 leaves the readers out (`--observe`: each writer also reads the others'
# records, which costs 10 polls/s and a GET per batch; without it visibility is not measured). Compare two builds by interleaving their runs; one run proves little on a shared
# machine.
set -euo pipefail
bin=$1
n=$2
rate=${3:-2000}
shift $(($# < 3 ? $# : 3))
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
observe=--observe
[ "${OBSERVE:-1}" = 0 ] && observe=
for i in $(seq 1 "$n"); do
  "$bin" log --store "file://$dir/store" --producers 4 --duration 15s \
    --store-latency 20ms..100ms --rate $((rate / n)) $observe "$@" \
    >"$dir/out-$i.json" 2>"$dir/err-$i.log" &
done
wait
python3 - "$dir" "$n" <<'PY'
import json, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
rows = []
for i in range(1, n + 1):
    with open(f"{d}/out-{i}.json") as f:
        j = json.loads(f.read().strip().splitlines()[-1])
    vis = j.get("others_visible_ms") or {}
    rows.append((j["ack_ms"]["p50"], j["ack_ms"]["p99"], j["store_requests_per_s"],
                 vis.get("p50"), vis.get("p99"), j["acked"], j["failed"]))
for r in rows:
    print("writer: ack p50 %.0f ms p99 %.0f ms, %.1f requests/s, others visible p50 %s p99 %s ms, %d acked %d failed" % r)
med = lambda k: statistics.median(r[k] for r in rows if r[k] is not None) if any(r[k] is not None for r in rows) else None
print(json.dumps({"writers": n, "ack_p50_ms": med(0), "ack_p99_ms": med(1), "ack_p99_max_ms": max(r[1] for r in rows),
                  "requests_per_s": med(2), "visible_p99_ms": med(4), "acked": sum(r[5] for r in rows),
                  "failed": sum(r[6] for r in rows)}))
PY
