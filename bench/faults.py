#!/usr/bin/env python3
"""The fault campaign of bench/faults.sh: two Strata nodes on one PostgreSQL, a three-node
Garage cluster behind a fault-injecting S3 proxy, and a load that never stops (C-STOREs to
either node), while rounds of randomized kill -9 hit the nodes during ingest, copy, verify,
delete-online, restore and NEARLINE retrieval. After every kill and restart the invariants
are checked; at the end the queue must drain with every job DONE and every acknowledged
instance must come back byte-exact over C-GET.

Environment (set by faults.sh): STRATA (binary), RUN (work dir), PG_URL (the campaign's
database), PG_RESTART (shell command that restarts PostgreSQL), GARAGE (binary), GARAGE_DIR,
GARAGE_PID_LIST (space separated), S3_ENDPOINT (node 1's S3 API), S3_KEY_ID, S3_SECRET,
S3_BUCKET, ROUNDS.

Prints one line per round and a summary; exits 1 if any invariant failed.
"""
import asyncio
import collections
import copy
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import requests
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

ENV = os.environ
RUN = Path(ENV["RUN"])
STRATA = ENV["STRATA"]
ROUNDS = int(ENV.get("ROUNDS", "100"))
PHASES = ["ingest", "copy", "verify", "delete", "restore", "retrieve"]
rng = random.Random(int(ENV.get("SEED", "20261202")))


def log(text):
    print(text, flush=True)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=30):
    import socket

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------- the S3 fault proxy
class S3Proxy:
    """TCP proxy in front of Garage. Modes: pass; 500 / 503 (answer every new request with
    that status); drop (close connections at once); stall (accept, never answer). Changing
    the mode closes the open connections, so faults hit transfers under way too."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.port = free_port()
        self.mode = "pass"
        self.writers = set()
        self.loop = asyncio.new_event_loop()
        self.faults = collections.Counter()
        threading.Thread(target=self._run, daemon=True).start()
        wait_port(self.port)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.loop.run_until_complete(server.serve_forever())

    def set_mode(self, mode):
        def change():
            self.mode = mode
            for writer in list(self.writers):
                writer.close()
            self.writers.clear()

        self.loop.call_soon_threadsafe(change)

    async def _client(self, reader, writer):
        mode = self.mode
        self.writers.add(writer)
        try:
            if mode in ("500", "503"):
                await reader.read(65536)
                self.faults[mode] += 1
                body = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
                writer.write(
                    f"HTTP/1.1 {mode} Injected\r\nContent-Type: application/xml\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
                )
                await writer.drain()
                return
            if mode == "drop":
                self.faults["drop"] += 1
                return
            if mode == "stall":
                self.faults["stall"] += 1
                await asyncio.sleep(120)
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            self.writers.add(up_writer)

            async def pipe(source, sink):
                try:
                    while data := await source.read(65536):
                        sink.write(data)
                        await sink.drain()
                except (ConnectionError, OSError):
                    pass
                finally:
                    sink.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self.writers.discard(writer)


# ---------------------------------------------------------------- Strata nodes
class Node:
    def __init__(self, name, s3_endpoint):
        self.name = name
        self.dir = RUN / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config = self.dir / "strata.toml"
        (RUN / "key-id").write_text(ENV["S3_KEY_ID"] + "\n")
        (RUN / "secret").write_text(ENV["S3_SECRET"] + "\n")
        self.config.write_text(f"""
data_dir = "{self.dir}/data"
database_url = "{ENV['PG_URL']}"
[http]
listen = "127.0.0.1:{self.http_port}"
admin_token_file = "{RUN}/admin-token"
[[online.filesystems]]
path = "{RUN}/online"
[[nearline.targets]]
name = "garage"
kind = "s3"
endpoint = "{s3_endpoint}"
region = "garage"
bucket = "{ENV['S3_BUCKET']}"
prefix = "faults/"
access_key_id_file = "{RUN}/key-id"
secret_access_key_file = "{RUN}/secret"
[lifecycle]
node_id = "{name}"
workers = 2
poll_interval_ms = 100
lease_secs = 3
backoff_base_secs = 1
backoff_max_secs = 4
max_attempts = 100
verify_schedule = ""
scavenge_schedule = ""
""")
        self.process = None
        self.kills = 0

    def start(self, extra_env=None):
        log_file = open(self.dir / "strata.log", "ab")
        self.process = subprocess.Popen(
            [STRATA, "--config", str(self.config), "serve", "--dicom-port", str(self.dicom_port)],
            stdout=log_file,
            stderr=log_file,
            env={**ENV, "STRATA_LOG": "warn", **(extra_env or {})},
        )
        if not wait_port(self.dicom_port) or not wait_port(self.http_port):
            raise SystemExit(f"{self.name} did not start; see {self.dir}/strata.log")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)

    def api(self, method, path, body=None):
        token = (RUN / "admin-token").read_text().strip()
        return requests.request(
            method,
            f"http://127.0.0.1:{self.http_port}/api{path}",
            headers={"Authorization": f"Bearer {token}"},
            json=body,
            timeout=30,
        )


# ---------------------------------------------------------------- the index, via psql
def sql(query):
    output = subprocess.run(
        ["psql", ENV["PG_URL"], "-AtF", "\t", "-c", query], capture_output=True, text=True, timeout=60
    )
    if output.returncode != 0:
        raise RuntimeError(output.stderr.strip())
    return [line.split("\t") for line in output.stdout.splitlines() if line]


# ---------------------------------------------------------------- the load
class Sender:
    """C-STOREs new instances (Explicit VR Little Endian only, so the bytes sent are the bytes
    stored) to a random node, forever; a success is an acknowledgement to keep."""

    def __init__(self, nodes, templates):
        self.nodes = nodes
        self.templates = templates
        self.acked = {}  # sop uid -> (study uid, sha256 of the data set bytes)
        self.lock = threading.Lock()
        self.failures = 0
        self.reasons = collections.Counter()
        self.slow = []
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.study = None
        self.in_study = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        ae = AE(ae_title="FAULTS")
        # pynetdicom does not always notice a peer killed mid-C-STORE and waits out its DIMSE
        # timeout (DCMTK's storescu sees the reset at once): keep that wait short.
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        while not self.stop.is_set():
            if self.paused.is_set():
                time.sleep(0.1)
                continue
            node = rng.choice(self.nodes)
            try:
                assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="STRATA")
            except Exception as error:  # noqa: BLE001
                self.failures += 1
                self.reasons[f"associate: {type(error).__name__}"] += 1
                time.sleep(0.2)
                continue
            if not assoc.is_established:
                self.failures += 1
                self.reasons["association refused or aborted"] += 1
                time.sleep(0.2)
                continue
            for _ in range(10):
                if self.stop.is_set() or self.paused.is_set():
                    break
                if self.study is None or self.in_study >= 12:
                    self.study, self.series, self.in_study = generate_uid(), generate_uid(), 0
                ds = copy.deepcopy(rng.choice(self.templates))
                ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study, self.series
                ds.SOPInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.PatientID = "FAULTS1"
                digest = hashlib.sha256(encode(ds, False, True)).hexdigest()
                started = time.time()
                try:
                    status = assoc.send_c_store(ds)
                except Exception as error:  # noqa: BLE001
                    self.reasons[f"C-STORE: {type(error).__name__}"] += 1
                    status = None
                took = time.time() - started
                self.slowest = max(getattr(self, "slowest", 0.0), took)
                if took > 5:
                    self.slow.append(f"{time.strftime('%H:%M:%S', time.localtime(started))} {node.name}"
                                     f" {took:.1f} s status {getattr(status, 'Status', None)}")
                if status and status.Status == 0:
                    with self.lock:
                        self.acked[ds.SOPInstanceUID] = (self.study, digest)
                    self.in_study += 1
                else:
                    self.failures += 1
                    self.reasons[f"C-STORE status {getattr(status, 'Status', None)}"] += 1
                    if not assoc.is_established:
                        break
            if assoc.is_established:
                assoc.release()

    def snapshot(self):
        with self.lock:
            return dict(self.acked)


# ---------------------------------------------------------------- invariants
def check_invariants(acked, label, orphans_allowed=True):
    """The acknowledged instances are indexed; no instance lacks both its ONLINE file and an
    ARCHIVED copy; no file row points at nothing (but mid-deletion rows). Files on disk that
    the index does not know (but the spool and files younger than 10 s, whose rows may be
    about to commit) are counted: a kill between a file's rename into place and its row's
    commit leaves one, never acknowledged, for the scavenger; with `orphans_allowed` False
    (after scavenging) any is a problem. Returns (problems, orphans)."""
    problems = []
    orphans = []
    indexed = {row[0] for row in sql("SELECT sop_uid FROM instance")}
    missing = [uid for uid in acked if uid not in indexed]
    if missing:
        problems.append(f"{len(missing)} acknowledged instances not indexed, e.g. {missing[0]}")
    unprotected = sql(
        "SELECT i.sop_uid FROM instance i WHERE NOT EXISTS (SELECT 1 FROM file f WHERE "
        "f.instance_fk = i.id AND f.status = 'OK') AND NOT EXISTS (SELECT 1 FROM pack_member m "
        "JOIN pack p ON p.id = m.pack_fk WHERE m.instance_fk = i.id AND p.status = 'ARCHIVED')"
    )
    if unprotected:
        problems.append(f"{len(unprotected)} instances with neither an ONLINE file nor an ARCHIVED copy")
    rows = sql(
        "SELECT fs.path || '/' || f.path, f.size_bytes, f.status FROM file f "
        "JOIN filesystem fs ON fs.id = f.filesystem_fk"
    )
    known = set()
    for path, size, status in rows:
        known.add(path)
        if status != "OK":
            continue
        try:
            actual = os.path.getsize(path)
        except OSError:
            problems.append(f"file row without a file: {path}")
            continue
        if actual != int(size):
            problems.append(f"file {path} is {actual} bytes, the index says {size}")
    now = time.time()
    online = RUN / "online"
    for path in online.rglob("*"):
        if not path.is_file() or ".incoming" in path.parts or path.name.startswith("."):
            continue
        if str(path) not in known and now - path.stat().st_mtime > 10:
            orphans.append(path)
    if orphans and not orphans_allowed:
        problems.append(f"{len(orphans)} files without a row, e.g. {orphans[0]}")
    for problem in problems[:5]:
        log(f"   INVARIANT ({label}): {problem}")
    return problems, orphans


# ---------------------------------------------------------------- rounds
def studies_where(condition):
    return [row[0] for row in sql(f"SELECT s.study_uid FROM study s WHERE {condition}")]


HAS_ONLINE = ("EXISTS (SELECT 1 FROM series se JOIN instance i ON i.series_fk = se.id JOIN file f "
              "ON f.instance_fk = i.id WHERE se.study_fk = s.id AND f.status = 'OK')")


def start_phase(phase, nodes, sender):
    """Starts the work of `phase` on a random node; returns a thread for retrievals."""
    node = rng.choice(nodes)
    if phase == "copy":
        for study in rng.sample(studies_where(HAS_ONLINE), k=min(3, len(studies_where(HAS_ONLINE)))):
            node.api("POST", f"/studies/{study}/copy", {"target": "garage"})
    elif phase == "verify":
        candidates = studies_where("EXISTS (SELECT 1 FROM pack p WHERE p.study_fk = s.id AND p.status = 'TO_ARCHIVE')")
        for study in rng.sample(candidates, k=min(3, len(candidates))):
            node.api("POST", f"/studies/{study}/verify", {"target": "garage"})
    elif phase == "delete":
        # Only studies whose every instance has an ARCHIVED copy: for the others the job is
        # refused by design ("nothing deleted"), which is not what this round is about.
        candidates = studies_where(HAS_ONLINE + " AND NOT EXISTS (SELECT 1 FROM series se JOIN instance i "
                                   "ON i.series_fk = se.id WHERE se.study_fk = s.id AND NOT EXISTS ("
                                   "SELECT 1 FROM pack_member m JOIN pack p ON p.id = m.pack_fk "
                                   "WHERE m.instance_fk = i.id AND p.status = 'ARCHIVED'))")
        for study in rng.sample(candidates, k=min(2, len(candidates))):
            node.api("POST", f"/studies/{study}/delete-online")
    elif phase == "restore":
        candidates = studies_where("s.availability = 'NEARLINE'")
        for study in rng.sample(candidates, k=min(1, len(candidates))):
            node.api("POST", f"/studies/{study}/restore")
    elif phase == "retrieve":
        candidates = studies_where("s.availability = 'NEARLINE'")
        if candidates:
            study = rng.choice(candidates)
            thread = threading.Thread(target=get_study, args=(node, study, {}), daemon=True)
            thread.start()
            return thread
    return None


def get_study(node, study, received):
    """C-GET of a study, Explicit VR Little Endian only: the bytes received are the stored
    bytes. Fills `received` (sop uid -> sha256); returns the final status or None."""
    ae = AE(ae_title="FAULTGET")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
    ae.add_requested_context(GET)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])

    def on_store(event):
        received[event.request.AffectedSOPInstanceUID] = hashlib.sha256(
            event.request.DataSet.getvalue()
        ).hexdigest()
        return 0x0000

    try:
        assoc = ae.associate(
            "127.0.0.1", node.dicom_port, ae_title="STRATA",
            ext_neg=[build_role(CTImageStorage, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
    except Exception:  # noqa: BLE001
        return None
    if not assoc.is_established:
        return None
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    status = None
    try:
        for code, _ in assoc.send_c_get(query, GET):
            if code:
                status = code.Status
    except Exception:  # noqa: BLE001
        return None
    if assoc.is_established:
        assoc.release()
    return status


def running_owner():
    rows = sql("SELECT owner_node FROM job WHERE state = 'RUNNING' ORDER BY random() LIMIT 1")
    return rows[0][0] if rows else None


def main():
    s3 = boto3.client(
        "s3", endpoint_url=ENV["S3_ENDPOINT"], region_name="garage",
        aws_access_key_id=ENV["S3_KEY_ID"], aws_secret_access_key=ENV["S3_SECRET"],
    )
    proxy = S3Proxy(int(ENV["S3_ENDPOINT"].rsplit(":", 1)[1]))
    proxy_endpoint = f"http://127.0.0.1:{proxy.port}"
    nodes = [Node("node-a", proxy_endpoint), Node("node-b", proxy_endpoint)]
    nodes[0].start()
    nodes[1].start()
    templates = [dcmread(p) for p in sorted(Path(ENV["CORPUS"]).rglob("*")) if p.is_file()][:4]
    sender = Sender(nodes, templates)
    sender.thread.start()
    time.sleep(5)

    garage_pids = [int(p) for p in ENV["GARAGE_PID_LIST"].split()]
    garage_dir = Path(ENV["GARAGE_DIR"])
    counts = collections.Counter()
    failures = []
    by_phase = collections.Counter()
    events = []

    def restart_garage(index):
        config = garage_dir / f"node{index + 1}" / "garage.toml"
        log_file = open(garage_dir / f"node{index + 1}" / "server.log", "ab")
        garage_pids[index] = subprocess.Popen([ENV["GARAGE"], "-c", str(config), "server"],
                                              stdout=log_file, stderr=log_file).pid

    s3_faults = {ROUNDS // 5: "503", 2 * ROUNDS // 5: "500", 3 * ROUNDS // 5: "drop", 4 * ROUNDS // 5: "stall"}
    for number in range(1, ROUNDS + 1):
        phase = PHASES[(number - 1) % len(PHASES)] if number <= len(PHASES) else rng.choice(PHASES)
        by_phase[phase] += 1
        note = ""
        if number == ROUNDS // 3:
            os.kill(garage_pids[2], signal.SIGKILL)
            note += " garage node 3 killed (copy);"
            phase = "copy"
        if number == 2 * ROUNDS // 3:
            os.kill(garage_pids[1], signal.SIGKILL)
            note += " garage node 2 killed (retrieval);"
            phase = "retrieve"
        if number in s3_faults:
            proxy.set_mode(s3_faults[number])
            note += f" S3 proxy: {s3_faults[number]};"
            phase = rng.choice(["copy", "verify"])
        if number == ROUNDS // 2:
            note += " PostgreSQL restarted during ingest;"
        if number == ROUNDS // 2 + 10:
            note += " PostgreSQL down 40 s during ingest;"
        retrieval = start_phase(phase, nodes, sender)
        time.sleep(rng.uniform(0.2, 2.0))
        if number == ROUNDS // 2:
            # Two extra senders, one per node, so C-STOREs are in flight at the restart.
            burst = [Burst(node, templates) for node in nodes]
            time.sleep(1)
            subprocess.run(ENV["PG_RESTART"], shell=True, check=True)
            time.sleep(3)
            for b in burst:
                b.stop.set()
            for b in burst:
                b.thread.join(timeout=60)
                with sender.lock:
                    sender.acked.update(b.acked)
            outcomes = collections.Counter()
            for b in burst:
                outcomes.update(b.outcomes)
            # Strata recovers without a restart: a C-STORE to each node succeeds again.
            recovered = []
            for node in nodes:
                deadline = time.time() + 30
                ok = False
                while time.time() < deadline and not ok:
                    ok = store_one_probe(node, templates[0])
                    time.sleep(0.5)
                recovered.append(ok)
            events.append(f"PostgreSQL restart during two extra senders' C-STOREs: outcomes {dict(outcomes)}"
                          f" (failures are statuses, never acknowledged); both nodes storing again"
                          f" without a restart: {all(recovered)}")
            if not all(recovered):
                failures.append("a node did not recover from the PostgreSQL restart")
        if number == ROUNDS // 2 + 10:
            # Longer than the index's 30 s connection wait: C-STOREs must fail with a status.
            burst = [Burst(node, templates) for node in nodes]
            time.sleep(1)
            subprocess.run(ENV["PG_STOP"], shell=True, check=True)
            time.sleep(40)
            subprocess.run(ENV["PG_START"], shell=True, check=True)
            time.sleep(5)
            for b in burst:
                b.stop.set()
            outcomes = collections.Counter()
            for b in burst:
                b.thread.join(timeout=90)
                with sender.lock:
                    sender.acked.update(b.acked)
                outcomes.update(b.outcomes)
            events.append(f"PostgreSQL down for 40 s during two extra senders' C-STOREs: outcomes {dict(outcomes)}")
            if not any(k.startswith("status") for k in outcomes):
                failures.append("no C-STORE got a failure status while PostgreSQL was down")
            if outcomes.get("no answer"):
                failures.append("C-STOREs went unanswered while PostgreSQL was down")
        owner = running_owner() if phase not in ("ingest", "retrieve") else None
        victim = next((n for n in nodes if n.name == owner), None) or rng.choice(nodes)
        acked = sender.snapshot()
        victim.kill()
        log(f"   {time.strftime('%H:%M:%S')} killed {victim.name}")
        counts["kills"] += 1
        victim.start()
        if retrieval:
            retrieval.join(timeout=120)
        problems, orphans = check_invariants(acked, f"round {number}")
        counts["checks"] += 1
        counts["max_orphans"] = max(counts["max_orphans"], len(orphans))
        if problems:
            failures.append(f"round {number}: {problems[0]}")
        if number in s3_faults:
            time.sleep(5)
            proxy.set_mode("pass")
        if number == ROUNDS // 3 + 5:
            restart_garage(2)
            note += " garage node 3 back;"
        if number == 2 * ROUNDS // 3 + 5:
            restart_garage(1)
            note += " garage node 2 back;"
        log(f"round {number:3} ({time.strftime('%H:%M:%S')}): {phase:8} killed {victim.name} (owner of a running job: {owner == victim.name});"
            f" acknowledged {len(acked)}; invariants {'ok' if not problems else 'FAILED'};"
            f" unindexed files awaiting the scavenger {len(orphans)};{note}")

    # The end: stop the load, let every job finish, check everything once more, byte for byte.
    sender.stop.set()
    sender.thread.join(timeout=60)
    acked = sender.snapshot()
    for study in studies_where(HAS_ONLINE):
        nodes[0].api("POST", f"/studies/{study}/copy", {"target": "garage"})
    drained = wait_drained(600)
    for study in studies_where("EXISTS (SELECT 1 FROM pack p WHERE p.study_fk = s.id AND p.status = 'TO_ARCHIVE')"):
        nodes[1].api("POST", f"/studies/{study}/verify", {"target": "garage"})
    drained = wait_drained(600) and drained
    states = dict(sql("SELECT state, count(*) FROM job GROUP BY state"))
    if not drained:
        failures.append("the job queue did not drain in 20 minutes")
    not_done = {k: v for k, v in states.items() if k != "DONE"}
    if not_done:
        failures.append(f"jobs not DONE at the end: {not_done}")
        for row in sql("SELECT id, job_type, state, attempts, last_error FROM job WHERE state <> 'DONE' LIMIT 5"):
            log(f"   job {row}")
    # The scavenger removes what kills left between a file's rename and its row's commit
    # (with the load stopped, no grace period is needed: nothing is on its way).
    _, orphans_before = check_invariants(acked, "before scavenging")
    nodes[0].stop()
    nodes[0].start(extra_env={"STRATA_LIFECYCLE__SCAVENGE_GRACE_HOURS": "0",
                              "STRATA_LIFECYCLE__REMOVE_ORPHANS": "true"})
    subprocess.run([STRATA, "--config", str(nodes[0].config), "scavenge", "--wait"], check=True,
                   capture_output=True, env={**ENV, "STRATA_LOG": "warn"})
    problems, _ = check_invariants(acked, "end", orphans_allowed=False)
    failures.extend(f"end: {p}" for p in problems)
    events.append(f"unindexed files left by kills, removed by the scavenger at the end: {len(orphans_before)}"
                  f" (most at once during the campaign: {counts['max_orphans']})")

    # Every ARCHIVED pack is in the bucket with its recorded size.
    wrong = 0
    packs = sql("SELECT p.object_key, p.size_bytes FROM pack p WHERE p.status = 'ARCHIVED'")
    for key, size in packs:
        try:
            head = s3.head_object(Bucket=ENV["S3_BUCKET"], Key=f"faults/{key}")
            if head["ContentLength"] != int(size):
                wrong += 1
        except Exception:  # noqa: BLE001
            wrong += 1
    if wrong:
        failures.append(f"{wrong} ARCHIVED packs missing or of the wrong size in the bucket")

    # Byte-exact: every acknowledged instance, by C-GET of its study (ONLINE or NEARLINE).
    by_study = collections.defaultdict(dict)
    for uid, (study, digest) in acked.items():
        by_study[study][uid] = digest
    compared = mismatched = absent = 0
    for study, expected in by_study.items():
        received = {}
        get_study(rng.choice(nodes), study, received)
        for uid, digest in expected.items():
            if uid not in received:
                absent += 1
            elif received[uid] != digest:
                mismatched += 1
            else:
                compared += 1
    if absent or mismatched:
        failures.append(f"byte-exact check: {absent} acknowledged instances not delivered, {mismatched} differ")

    for node in nodes:
        node.stop()
    availability = dict(sql("SELECT availability, count(*) FROM study GROUP BY availability"))
    summary = {
        "rounds": ROUNDS,
        "strata_kills": counts["kills"],
        "kills_by_phase": dict(by_phase),
        "invariant_checks": counts["checks"],
        "acknowledged_instances": len(acked),
        "byte_exact": compared,
        "lost": absent + mismatched,
        "c_store_failures_seen_by_sender": sender.failures,
        "sender_failures_by_reason": dict(sender.reasons),
        "slowest_c_store_s": round(getattr(sender, "slowest", 0.0), 2),
        "c_stores_over_5_s": sender.slow,
        "jobs_by_state": states,
        "archived_packs_checked_in_bucket": len(packs),
        "studies_by_availability": availability,
        "s3_faults_injected": dict(proxy.faults),
        "events": events,
        "failures": failures,
    }
    log(json.dumps(summary, indent=1))
    (RUN.parent / "faults-summary.json").write_text(json.dumps(summary, indent=1))
    sys.exit(1 if failures else 0)


class Burst:
    """C-STOREs to one node as fast as it answers, counting each outcome by its status."""

    def __init__(self, node, templates):
        self.acked = {}
        self.outcomes = collections.Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(node, templates), daemon=True)
        self.thread.start()

    def _run(self, node, templates):
        ae = AE(ae_title="FAULTBURST")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        study, series = generate_uid(), generate_uid()
        while not self.stop.is_set():
            try:
                assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="STRATA")
            except Exception:  # noqa: BLE001
                self.outcomes["no association"] += 1
                time.sleep(0.2)
                continue
            if not assoc.is_established:
                self.outcomes["no association"] += 1
                time.sleep(0.2)
                continue
            while not self.stop.is_set() and assoc.is_established:
                ds = copy.deepcopy(rng.choice(templates))
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                ds.SOPInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                digest = hashlib.sha256(encode(ds, False, True)).hexdigest()
                try:
                    status = assoc.send_c_store(ds)
                except Exception:  # noqa: BLE001
                    status = None
                code = getattr(status, "Status", None)
                if code == 0:
                    self.acked[ds.SOPInstanceUID] = (study, digest)
                    self.outcomes["success"] += 1
                else:
                    self.outcomes[f"status {code:#06x}" if code is not None else "no answer"] += 1
            if assoc.is_established:
                assoc.release()


def store_one_probe(node, template):
    ae = AE(ae_title="FAULTPROBE")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    try:
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="STRATA")
    except Exception:  # noqa: BLE001
        return False
    if not assoc.is_established:
        return False
    ds = copy.deepcopy(template)
    ds.StudyInstanceUID = ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    try:
        status = assoc.send_c_store(ds)
    except Exception:  # noqa: BLE001
        status = None
    if assoc.is_established:
        assoc.release()
    return bool(status and status.Status == 0)


def wait_drained(seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        live = sql("SELECT count(*) FROM job WHERE state IN ('QUEUED', 'RUNNING')")[0][0]
        if live == "0":
            return True
        time.sleep(1)
    return False


if __name__ == "__main__":
    main()
