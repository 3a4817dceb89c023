# Garage, a production S3 server, for tests and benchmarks (sourced by scripts/test.sh and
# bench/tier.sh). Garage is built from crates.io once and reused from ~/.cargo/bin.

GARAGE_VERSION=2.5.0
garage_binary() {
    if [ -n "${STRATA_TEST_GARAGE:-}" ]; then echo "$STRATA_TEST_GARAGE"
    elif [ -x "$HOME/.cargo/bin/garage" ]; then echo "$HOME/.cargo/bin/garage"
    else command -v garage || true; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A single-node Garage with one bucket (strata-test) and fixed test credentials, its data
# under the given directory; exports STRATA_TEST_S3_* and sets STARTED_GARAGE to its pid.
start_garage() { # directory
    start_garage_cluster "$1" 1
    STARTED_GARAGE=${GARAGE_PIDS[0]}
}

pg_reachable() { # host port
    if command -v pg_isready >/dev/null; then pg_isready -q -h "$1" -p "$2" 2>/dev/null
    else (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; fi
}

# Starts a private PostgreSQL under target/pg (initdb refuses to run as root: use postgres).
start_own_postgres() {
    local bin port=55432 data="$root_dir/target/pg/data"
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    mkdir -p "$root_dir/target/pg"
    local run_as=()
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$root_dir/target/pg"; run_as=(runuser -u postgres --); fi
    if [ ! -f "$data/PG_VERSION" ]; then
        "${run_as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
    fi
    "${run_as[@]}" "$bin/pg_ctl" -D "$data" -l "$root_dir/target/pg/log" -w \
        -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    STARTED_PG=("${run_as[@]}" "$bin/pg_ctl" -D "$data" -m fast stop)
    export STRATA_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}


# A Garage cluster of `count` nodes on loopback (replication factor 3 from three nodes on, as
# in bench/faults.sh; 1 for one node), with one bucket (strata-test) and fixed test
# credentials: node N's config is DIR/nodeN/garage.toml; the S3 API of node 1 is the endpoint
# exported as STRATA_TEST_S3_* (the other nodes serve S3 too, on the ports in their configs).
# Sets GARAGE_PIDS (one per node, in order).
start_garage_cluster() { # directory count
    local garage dir="$1" count="$2" secret n node ids=() first_rpc=""
    garage=$(garage_binary)
    [ -n "$garage" ] || { echo "garage is not installed (run without SKIP_INSTALL=1)" >&2; return 1; }
    rm -rf "$dir" && mkdir -p "$dir"
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    GARAGE_PIDS=()
    for n in $(seq 1 "$count"); do
        local s3_port rpc_port
        s3_port=$(free_port); rpc_port=$(free_port)
        mkdir -p "$dir/node$n"
        cat >"$dir/node$n/garage.toml" <<TOML
metadata_dir = "$dir/node$n/meta"
data_dir = "$dir/node$n/data"
db_engine = "sqlite"
replication_factor = $(( count < 3 ? 1 : 3 ))
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$secret"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"
TOML
        "$garage" -c "$dir/node$n/garage.toml" server >"$dir/node$n/server.log" 2>&1 &
        GARAGE_PIDS+=($!)
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && break; sleep 0.1; done
        [ "$n" = 1 ] && export STRATA_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
        node=$("$garage" -c "$dir/node$n/garage.toml" node id -q)
        ids+=("${node%%@*}")
        if [ "$n" = 1 ]; then first_rpc=$node; else
            "$garage" -c "$dir/node$n/garage.toml" node connect "$first_rpc" >/dev/null
        fi
    done
    local cfg="$dir/node1/garage.toml"
    for id in "${ids[@]}"; do "$garage" -c "$cfg" layout assign -z dc1 -c 1G "$id" >/dev/null; done
    "$garage" -c "$cfg" layout apply --version 1 >/dev/null
    "$garage" -c "$cfg" key import --yes GK0123456789abcdef01234567 \
        0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef -n strata-test >/dev/null
    "$garage" -c "$cfg" bucket create strata-test >/dev/null
    "$garage" -c "$cfg" bucket allow --read --write --owner strata-test --key strata-test >/dev/null
    export STRATA_TEST_GARAGE="$garage"
    export STRATA_TEST_S3_BUCKET=strata-test
    export STRATA_TEST_S3_ACCESS_KEY_ID=GK0123456789abcdef01234567
    export STRATA_TEST_S3_SECRET_ACCESS_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
}
