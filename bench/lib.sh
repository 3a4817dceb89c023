# Shared by the NEARLINE benchmarks (bench/tier.sh, bench/retrieve.sh): sourced after
# scripts/garage.sh, with $root, $bench and $strata set.

wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }

# A cached synthetic corpus of 1024x1024x16-bit CT images (2 MiB each); prints its directory.
workload() { # name patients series instances seed (UIDs derive from the seed)
    local dir=$bench/workloads/tier-$1
    if [ ! -f "$dir.done" ]; then
        rm -rf "$dir"
        "$strata" generate --out "$dir" --patients "$2" --series-per-study "$3" --instances-per-series "$4" \
            --matrix 1024 --seed "$5" --patient-prefix "TIER$1" >/dev/null
        touch "$dir.done"
    fi
    echo "$dir"
}

# Writes $run/strata.toml: an S3 target `garage` on the Garage that start_garage started.
write_s3_config() { # extra TOML appended
    printf '%s\n' "$STRATA_TEST_S3_ACCESS_KEY_ID" >"$run/key-id"
    printf '%s\n' "$STRATA_TEST_S3_SECRET_ACCESS_KEY" >"$run/secret"
    cat >"$run/strata.toml" <<TOML
data_dir = "$run/strata"
[[nearline.targets]]
name = "garage"
kind = "s3"
endpoint = "$STRATA_TEST_S3_ENDPOINT"
region = "garage"
bucket = "$STRATA_TEST_S3_BUCKET"
prefix = "strata/"
access_key_id_file = "$run/key-id"
secret_access_key_file = "$run/secret"
[lifecycle]
poll_interval_ms = 100
verify_schedule = ""
$1
TOML
}

# Starts `strata serve` on $run/strata.toml; sets $pid and $port.
serve() {
    port=$(free_port)
    "$strata" --config "$run/strata.toml" serve --dicom-port "$port" --http-listen "127.0.0.1:$(free_port)" >"$run/strata.log" 2>&1 &
    pid=$!
    wait_port "$port"
}
