#!/usr/bin/env bash
# Soak: 16 associations for 10 minutes of mixed C-STORE / C-FIND / C-MOVE / C-GET and DICOMweb
# reads (bench/soak_client.py, pynetdicom + requests), while a copy rule (every 20 s) packs
# studies to a Garage S3 target, verify-sync (every 30 s) marks them ARCHIVED and a retention
# rule (every minute) deletes the ONLINE copies of archived studies, so reads keep crossing
# tiers (NEARLINE retrievals through the retrieve cache).
#
# Reported: per operation count, errors, p50 and p99 latency; Strata's RSS and open file
# descriptors at the start of the load, at its end and at most (sampled every 5 s); jobs by
# state; studies by availability. Flat means end within a few MB / a few descriptors of start.
#
# Usage: bench/soak.sh [--seconds N] [--associations N] [--postgres]
#        (needs garage, DCMTK, pynetdicom, requests; --postgres uses STRATA_TEST_PG_URL or
#        postgres://root@127.0.0.1:5432/postgres to create a fresh database)
# BENCH_DB_QUERY is appended to the database URL (e.g. `statement-cache-capacity=0` for
# PostgreSQL); the environment reaches Strata, so MALLOC_ARENA_MAX and the like apply too.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=600
associations=16
engine=sqlite
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --associations) associations=$2; shift 2 ;;
        --postgres) engine=postgres; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
bench=${BENCH_DIR:-$root/target/bench}
run=$bench/soak-$(date +%s)
export TCP_NODELAY=1 STRATA_LOG=warn
cargo build --release --quiet
strata=$root/target/release/strata
# shellcheck source=scripts/garage.sh
source "$root/scripts/garage.sh"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

mkdir -p "$run"
STARTED_GARAGE=""
pid=""
sampler=""
trap '[ -n "$sampler" ] && kill "$sampler" 2>/dev/null; [ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$STARTED_GARAGE" ] && kill "$STARTED_GARAGE" 2>/dev/null; rm -rf "$run"' EXIT
start_garage "$run/garage"

database_url="sqlite://$run/strata/index.db"
if [ "$engine" = postgres ]; then
    admin=${STRATA_TEST_PG_URL:-postgres://root@127.0.0.1:5432/postgres}
    name=strata_soak_$(date +%s)
    psql "$admin" -qc "CREATE DATABASE $name" >/dev/null
    database_url="${admin%/*}/$name"
fi
if [ -n "${BENCH_DB_QUERY:-}" ]; then database_url="$database_url?$BENCH_DB_QUERY"; fi

printf '%s\n' "$STRATA_TEST_S3_ACCESS_KEY_ID" >"$run/key-id"
printf '%s\n' "$STRATA_TEST_S3_SECRET_ACCESS_KEY" >"$run/secret"
cat >"$run/strata.toml" <<TOML
data_dir = "$run/strata"
database_url = "$database_url"
[[nearline.targets]]
name = "garage"
kind = "s3"
endpoint = "$STRATA_TEST_S3_ENDPOINT"
region = "garage"
bucket = "$STRATA_TEST_S3_BUCKET"
prefix = "soak/"
access_key_id_file = "$run/key-id"
secret_access_key_file = "$run/secret"
[lifecycle]
poll_interval_ms = 200
verify_schedule = "*/30 * * * * *"
[[lifecycle.copy_rules]]
name = "everything"
target = "garage"
schedule = "*/20 * * * * *"
stable_minutes = 0
[[lifecycle.retention_rules]]
name = "archived"
schedule = "0 * * * * *"
not_accessed_days = 0
TOML

# The seed: 20 studies of 2 series x 5 small CT images, there before the load starts.
corpus=$run/corpus
"$strata" generate --out "$corpus" --patients 20 --series-per-study 2 --instances-per-series 5 \
    --matrix 64 --seed 4242 --patient-prefix SOAKSEED >/dev/null
http_port=$(free_port)
dest_port=$(free_port)
serve_soak() {
    port=$(free_port)
    "$strata" --config "$run/strata.toml" serve --dicom-port "$port" --http-listen "127.0.0.1:$http_port" >"$run/strata.log" 2>&1 &
    pid=$!
    wait_port "$port"
}
serve_soak
/usr/bin/storescu -aec STRATA +sd +r -nh 127.0.0.1 "$port" "$corpus"
"$strata" --config "$run/strata.toml" ae add SOAKDEST 127.0.0.1 "$dest_port" >/dev/null
token=$(cat "$run/strata/admin-token")

# Samples every 5 s: seconds since start, RSS (kB), open descriptors.
sample() {
    local start
    start=$(date +%s)
    while kill -0 "$pid" 2>/dev/null; do
        printf '%s %s %s\n' "$(( $(date +%s) - start ))" \
            "$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")" "$(ls "/proc/$pid/fd" | wc -l)" >>"$run/samples"
        sleep 5
    done
}
sample &
sampler=$!

python3 "$root/bench/soak_client.py" --port "$port" --base "http://127.0.0.1:$http_port/dicom-web" \
    --token "$token" --corpus "$corpus" --seconds "$seconds" --associations "$associations" \
    --dest-port "$dest_port" --out "$run/results.json"
sleep 6
kill "$sampler" 2>/dev/null || true
sampler=""

cp "$run/results.json" "$run/samples" "$bench/" 2>/dev/null || true
jobs_by_state=$("$strata" --config "$run/strata.toml" jobs list --json | python3 -c '
import collections, json, sys
jobs = [json.loads(line) for line in sys.stdin if line.strip()]
print(", ".join(f"{k} {v}" for k, v in sorted(collections.Counter(j["state"] for j in jobs).items())))')
availability=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$http_port/api/stats" | python3 -c '
import json, sys
stats = json.load(sys.stdin)
print(", ".join("{} {}".format(a["availability"], a["studies"]) for a in stats["availability"]))')

python3 - "$run/results.json" "$run/samples" "$engine" "$jobs_by_state" "$availability" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))
samples = [tuple(int(x) for x in line.split()) for line in open(sys.argv[2]) if line.strip()]
engine, jobs, availability = sys.argv[3:6]
print(f"Soak on {engine}: {results['associations']} associations, {results['seconds']} s")
print()
print("| operation | done | errors | p50 ms | p99 ms |")
print("|---|---:|---:|---:|---:|")
for op, row in results["ops"].items():
    print(f"| {op} | {row['ok']} | {row['errors']} | {row['p50_ms']} | {row['p99_ms']} |")
for op, row in results["ops"].items():
    if row["example_error"]:
        print(f"first {op} error: {row['example_error']}")
load = [s for s in samples if s[0] >= 5]  # after the seed, while the load runs
first, last = load[0], load[-1]
print()
print(f"RSS MB: start {first[1] / 1024:.1f}, end {last[1] / 1024:.1f}, max {max(s[1] for s in load) / 1024:.1f}")
print(f"open descriptors: start {first[2]}, end {last[2]}, max {max(s[2] for s in load)}")
# The curve, and its slope over the second half of the load: flat means about 0 MB a minute.
steps = max(1, len(load) // 10)
print("RSS MB over the load: " + ", ".join(
    f"{s[1] / 1024:.1f} at {s[0] / 60:.1f} min" for s in load[::steps] + [last]))
half = [s for s in load if s[0] >= (first[0] + last[0]) / 2]
if len(half) > 2:
    n = len(half)
    mean_t = sum(s[0] for s in half) / n
    mean_r = sum(s[1] for s in half) / n
    slope = sum((s[0] - mean_t) * (s[1] - mean_r) for s in half) / max(
        1e-9, sum((s[0] - mean_t) ** 2 for s in half))
    print(f"RSS slope over the second half: {slope * 60 / 1024:+.2f} MB a minute")
print(f"instances delivered to the C-MOVE destination: {results['moved_instances_received']}")
print(f"studies known at the end: {results['studies_known']}; by availability: {availability}")
print(f"jobs by state: {jobs}")
PY
if grep -q '"errors": [1-9]' "$run/results.json"; then
    echo "soak: some operations failed (see above)" >&2
    exit 1
fi
