#!/usr/bin/env bash
# C-MOVE of a 1 GiB study that is only NEARLINE (on Garage), to DCMTK storescp, against the
# two things it is made of, measured in the same run on the same servers:
#   (a) a plain GET of the same pack from Garage (boto3), and
#   (b) a C-MOVE of the same study while it was ONLINE.
# Target: NEARLINE C-MOVE <= 1.2 x (a + b).
# Usage: bench/retrieve.sh        (needs garage, see scripts/garage.sh; DCMTK; boto3)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bench=${BENCH_DIR:-$root/target/bench}
run=$bench/retrieve-$(date +%s)
export TCP_NODELAY=1 STRATA_LOG=${STRATA_LOG:-warn}
cargo build --release --quiet
strata=$root/target/release/strata
# shellcheck source=scripts/garage.sh
source "$root/scripts/garage.sh"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

mkdir -p "$run"
STARTED_GARAGE=""
pid=""
scp=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$scp" ] && kill "$scp" 2>/dev/null; [ -n "$STARTED_GARAGE" ] && kill "$STARTED_GARAGE" 2>/dev/null; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$run"' EXIT
start_garage "$run/garage"
study_dir=$(workload 1g-single 1 4 128 79)
study=2.25.79.0.0
write_s3_config "[nearline]
cache_size = \"4GiB\""
serve
cli() { "$strata" --config "$run/strata.toml" "$@"; }
/usr/bin/storescu -aec STRATA +sd +r -nh 127.0.0.1 "$port" "$study_dir"
cli copy --study "$study" --wait >/dev/null
cli verify --study "$study" --wait >/dev/null

scp_port=$(free_port)
mkdir -p "$run/received"
/usr/bin/storescp -aet DEST +B -od "$run/received" "$scp_port" >/dev/null 2>&1 & scp=$!
wait_port "$scp_port"
cli ae add DEST 127.0.0.1 "$scp_port" >/dev/null
move() {
    rm -rf "$run/received" && mkdir -p "$run/received"
    local start
    start=$(now)
    /usr/bin/movescu -S -aec STRATA -aem DEST -k QueryRetrieveLevel=STUDY -k "StudyInstanceUID=$study" 127.0.0.1 "$port"
    calc "$(now) - $start"
}
count=$(find "$study_dir" -name '*.dcm' | wc -l)
online_secs=$(move)
online_received=$(find "$run/received" -type f | wc -l)

cli delete-online --study "$study" --wait >/dev/null
key=$(python3 -c "import sqlite3; print(sqlite3.connect('$run/strata/index.db').execute(\"select object_key from pack where status = 'ARCHIVED'\").fetchone()[0])")
pack_bytes=$(python3 -c "import sqlite3; print(sqlite3.connect('$run/strata/index.db').execute(\"select size_bytes from pack where status = 'ARCHIVED'\").fetchone()[0])")
get_secs=$(python3 - "strata/$key" <<'PY'
import boto3, os, sys, time
s3 = boto3.client("s3", endpoint_url=os.environ["STRATA_TEST_S3_ENDPOINT"], region_name="garage",
                  aws_access_key_id=os.environ["STRATA_TEST_S3_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["STRATA_TEST_S3_SECRET_ACCESS_KEY"])
start = time.time()
body = s3.get_object(Bucket=os.environ["STRATA_TEST_S3_BUCKET"], Key=sys.argv[1])["Body"]
while body.read(8 << 20):
    pass
print(f"{time.time() - start:.3f}")
PY
)
nearline_secs=$(move)
nearline_received=$(find "$run/received" -type f | wc -l)

echo "| $count instances, $pack_bytes-byte pack | seconds |"
echo "|---|---:|"
printf '| (a) plain GET of the pack (boto3) | %.2f |\n' "$get_secs"
printf '| (b) C-MOVE while ONLINE | %.2f |\n' "$online_secs"
printf '| C-MOVE while NEARLINE only (fetch, verify, unpack, send) | %.2f |\n' "$nearline_secs"
echo "NEARLINE C-MOVE = $(calc "$nearline_secs / ($get_secs + $online_secs)")x (a + b) (target <= 1.2); storescp received $online_received and $nearline_received of $count"
