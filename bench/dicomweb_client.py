#!/usr/bin/env python3
"""Timing client of bench/dicomweb.sh: the same code measures every server.

Subcommands (each prints one JSON object on stdout; errors exit non-zero with a message):
  manifest CORPUS OUT.json            UIDs of a corpus of `strata generate` files (part*/ dirs)
  stow-bodies CORPUS MANIFEST BATCH   builds the STOW-RS bodies once, under CORPUS/stow-bodies
  check-load BASE MANIFEST            every study of MANIFEST is there, with all its instances
  qido BASE MANIFEST N                N searches by PatientID, N by PatientName wildcard
  metadata BASE MANIFEST N            N series /metadata requests (series in turn)
  wado BASE MANIFEST ROUNDS           whole-study WADO-RS retrievals, every study each round
  stow BASE MANIFEST                  posts the bodies, one client (thread) per study
  floor N                             N timed GETs against a server that answers at once
  table RUN_DIR ORTHANC STRATA...     the Markdown table from RUN_DIR/<label>.r<round>.json
                                      and RUN_DIR/floor.json: medians over the rounds

BASE is a DICOMweb root such as http://127.0.0.1:8042/dicom-web; the bearer token, when the
server needs one, comes from the environment (DICOMWEB_TOKEN). Every answer is checked before
or while it is timed, so a server that answers wrongly fails the benchmark instead of looking
fast. Latency is measured from sending the request to holding the whole answer body, by one
keep-alive requests.Session, with Accept-Encoding: identity (no server compresses).
"""
import glob
import json
import os
import re
import statistics
import struct
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import requests

DICOM_JSON = "application/dicom+json"
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
STOW_BOUNDARY = "strata-bench-stow-5f0c2a9e71d84b36"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={STOW_BOUNDARY}'
# Attributes read from files and from WADO-RS parts.
PATIENT_ID, PATIENT_NAME = 0x00100020, 0x00100010
STUDY_UID, SERIES_UID, SOP_UID = 0x0020000D, 0x0020000E, 0x00080018
TRANSFER_SYNTAX = 0x00020010
LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR", b"SV", b"UV"}


class BenchError(Exception):
    pass


def fail(message):
    raise BenchError(message)


def parse_part10(data, wanted=(PATIENT_ID, PATIENT_NAME, STUDY_UID, SERIES_UID, SOP_UID)):
    """A few top-level string attributes of a Part-10 object (explicit or implicit VR little
    endian, as `strata generate` writes and a server returns them with transfer-syntax=*)."""
    if len(data) < 132 or data[128:132] != b"DICM":
        fail("not a Part-10 object (no DICM at offset 128)")
    out, pos, implicit = {}, 132, False
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | element
        if tag >= 0x7FE00010:
            break
        if implicit and group != 0x0002:
            length, header = struct.unpack_from("<I", data, pos + 4)[0], 8
        elif data[pos + 4:pos + 6] in LONG_VRS:
            length, header = struct.unpack_from("<I", data, pos + 8)[0], 12
        else:
            length, header = struct.unpack_from("<H", data, pos + 6)[0], 8
        if length == 0xFFFFFFFF:
            fail(f"undefined length at tag {tag:08X}: not supported by this reader")
        if pos + header + length > len(data):
            break
        value = data[pos + header:pos + header + length]
        if tag == TRANSFER_SYNTAX:
            implicit = value.rstrip(b"\0 ").decode("ascii") == "1.2.840.10008.1.2"
        if tag in wanted:
            out[tag] = value.rstrip(b"\0 ").decode("latin-1")
        pos += header + length
    return out


# ---------------------------------------------------------------- corpus preparation

def manifest(corpus, out):
    """studies: one per part directory (the unit of one storescu association and of one STOW
    client), each with its patient, its series and their instances' UIDs and files."""
    studies = []
    for part in sorted(Path(corpus).glob("part*")):
        files = sorted(part.glob("*.dcm"))
        study = None
        for f in files:
            with open(f, "rb") as fh:
                tags = parse_part10(fh.read(16384))
            if study is None:
                study = {"patient_id": tags[PATIENT_ID], "patient_name": tags[PATIENT_NAME],
                         "study": tags[STUDY_UID], "series": {}, "files": []}
            if tags[STUDY_UID] != study["study"]:
                fail(f"{part} holds more than one study")
            study["series"].setdefault(tags[SERIES_UID], []).append(tags[SOP_UID])
            study["files"].append(str(f))
        if study:
            studies.append(study)
    data = {"studies": studies, "instances": sum(len(s["files"]) for s in studies),
            "bytes": sum(os.path.getsize(f) for s in studies for f in s["files"])}
    Path(out).write_text(json.dumps(data))
    return {"studies": len(studies), "instances": data["instances"], "bytes": data["bytes"]}


def stow_bodies(corpus, manifest_path, batch):
    """One file per request: `batch` instances of one study, the same bytes for every server."""
    m = load(manifest_path)
    root = Path(corpus) / "stow-bodies"
    count = 0
    for k, study in enumerate(m["studies"]):
        (root / f"client{k}").mkdir(parents=True, exist_ok=True)
        files = study["files"]
        for j in range(0, len(files), batch):
            chunk = []
            for f in files[j:j + batch]:
                data = Path(f).read_bytes()
                if STOW_BOUNDARY.encode() in data:
                    fail(f"{f} contains the multipart boundary")
                chunk += [f"--{STOW_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode(), data, b"\r\n"]
            chunk.append(f"--{STOW_BOUNDARY}--\r\n".encode())
            (root / f"client{k}" / f"batch{j // batch:04d}-{len(files[j:j + batch])}.bin").write_bytes(b"".join(chunk))
            count += 1
    return {"bodies": count}


# ---------------------------------------------------------------- helpers

def load(path):
    return json.loads(Path(path).read_text())


def session():
    s = requests.Session()
    s.headers["Accept-Encoding"] = "identity"
    token = os.environ.get("DICOMWEB_TOKEN")
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    return s


def timed_get(s, url, **kwargs):
    start = time.perf_counter()
    r = s.get(url, **kwargs)
    r.content  # the whole body
    return time.perf_counter() - start, r


def expect_ok(r, what):
    if r.status_code != 200:
        fail(f"{what}: HTTP {r.status_code}: {r.text[:300]!r}")


def values(item, tag):
    return (item.get(tag) or {}).get("Value") or []


def percentiles(seconds):
    ms = sorted(x * 1000 for x in seconds)
    at = lambda q: ms[min(len(ms) - 1, max(0, int(round(q * len(ms) + 0.5)) - 1))]  # nearest rank
    return {"p50": statistics.median(ms), "p90": at(0.90), "p99": at(0.99), "n": len(ms)}


# ---------------------------------------------------------------- measurements

def check_load(base, manifest_path):
    """Each study is found by its UID and counts all its instances (QIDO-RS)."""
    m = load(manifest_path)
    s = session()
    for study in m["studies"]:
        want = sum(len(v) for v in study["series"].values())
        r = s.get(f"{base}/studies", params={"StudyInstanceUID": study["study"], "includefield": "00201208"},
                  headers={"Accept": DICOM_JSON})
        expect_ok(r, f"QIDO of study {study['study']}")
        found = r.json() if r.content else []
        if len(found) != 1:
            fail(f"QIDO of study {study['study']}: {len(found)} matches, expected 1")
        have = values(found[0], "00201208")
        if have != [want]:
            fail(f"study {study['study']}: NumberOfStudyRelatedInstances {have}, expected {want}")
    return {"studies": len(m["studies"]), "instances": m["instances"]}


def qido(base, manifest_path, n):
    """n searches by PatientID and n by a PatientName wildcard that matches one patient only,
    patients in turn; each answer must be that patient's one study."""
    m = load(manifest_path)
    s = session()
    result = {}
    for kind in ("patient_id", "patient_name"):
        times = []
        for i in range(n + 5):  # the first 5 warm up and are not counted
            study = m["studies"][i % len(m["studies"])]
            if kind == "patient_id":
                params = {"PatientID": study["patient_id"]}
            else:
                # Orthanc 1.10.1 / DICOMweb 1.7 (Debian 12) does not percent-decode QIDO values
                # (PatientName=Synthetic%5EPatient0 or PatientID=X%2A find nothing), and requests
                # percent-encodes `^` whatever we do: `*` stands in for it, sent unencoded.
                params = {"PatientName": study["patient_name"].replace("^", "*") + "*"}
            query = "&".join(f"{k}={quote(v, safe='*')}" for k, v in params.items())
            seconds, r = timed_get(s, f"{base}/studies?{query}", headers={"Accept": DICOM_JSON})
            expect_ok(r, f"QIDO {params}")
            found = r.json()
            uids = [values(x, "0020000D") for x in found]
            if uids != [[study["study"]]]:
                fail(f"QIDO {params}: found {uids}, expected [[{study['study']}]]")
            if i >= 5:
                times.append(seconds)
        result[kind] = percentiles(times)
    return result


def metadata(base, manifest_path, n):
    """n GETs of series /metadata, the corpus's series in turn; every answer must hold exactly
    the series' instances (by SOP Instance UID), each with its Study and Series UIDs."""
    m = load(manifest_path)
    s = session()
    series = [(st["study"], se, set(sops)) for st in m["studies"] for se, sops in st["series"].items()]
    times, body_bytes = [], 0
    for i in range(n + len(series)):  # one warm-up per series
        study, uid, sops = series[i % len(series)]
        seconds, r = timed_get(s, f"{base}/studies/{study}/series/{uid}/metadata", headers={"Accept": DICOM_JSON})
        expect_ok(r, f"metadata of series {uid}")
        items = r.json()
        got = [values(x, "00080018") for x in items]
        if len(items) != len(sops) or {g[0] for g in got if g} != sops:
            fail(f"metadata of series {uid}: {len(items)} items, expected the {len(sops)} instances")
        for x in items:
            if values(x, "0020000D") != [study] or values(x, "0020000E") != [uid]:
                fail(f"metadata of series {uid}: an item has the wrong Study/Series UID")
        if i >= len(series):
            times.append(seconds)
            body_bytes = len(r.content)
    out = percentiles(times)
    out.update(instances=len(series[0][2]), body_bytes=body_bytes)
    return out


def multipart_parts(content_type, body):
    match = re.search(r'boundary="?([^";,\s]+)"?', content_type or "")
    if not match or not content_type.lower().startswith("multipart/related"):
        fail(f"not a multipart/related answer: Content-Type {content_type!r}")
    delimiter = b"--" + match.group(1).encode()
    parts, pos = [], body.find(delimiter)
    if pos < 0:
        fail("multipart answer without its boundary")
    while True:
        pos += len(delimiter)
        if body[pos:pos + 2] == b"--":
            return parts
        end = body.find(b"\r\n" + delimiter, pos)
        if end < 0:
            fail("multipart answer is not closed")
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0 or head_end > end:
            fail("a part has no header block")
        headers = body[pos:head_end].decode("latin-1").lower()
        parts.append((headers, memoryview(body)[head_end + 4:end]))
        pos = end + 2


def wado(base, manifest_path, rounds):
    """Every study in turn, `rounds` times; the first retrieval of each study is checked in
    full (one application/dicom part per instance, the right SOP Instance UIDs) and not
    counted, later ones are counted (body bytes) and must be as long as the checked one."""
    m = load(manifest_path)
    s = session()
    checked = {}
    for study in m["studies"]:
        r = s.get(f"{base}/studies/{study['study']}", headers={"Accept": WADO_ACCEPT})
        expect_ok(r, f"WADO-RS of study {study['study']}")
        parts = multipart_parts(r.headers.get("Content-Type"), r.content)
        want = {sop for sops in study["series"].values() for sop in sops}
        got = set()
        for headers, data in parts:
            if "application/dicom" not in headers:
                fail(f"WADO-RS of study {study['study']}: a part is not application/dicom: {headers!r}")
            tags = parse_part10(bytes(data[:16384]))
            if tags.get(STUDY_UID) != study["study"]:
                fail(f"WADO-RS of study {study['study']}: a part belongs to study {tags.get(STUDY_UID)}")
            got.add(tags.get(SOP_UID))
        if len(parts) != len(want) or got != want:
            fail(f"WADO-RS of study {study['study']}: {len(parts)} parts, expected the {len(want)} instances")
        checked[study["study"]] = (len(r.content), len(parts))
    per_round = []
    for _ in range(rounds):
        total, start = 0, time.perf_counter()
        for study in m["studies"]:
            n = 0
            with s.get(f"{base}/studies/{study['study']}", headers={"Accept": WADO_ACCEPT}, stream=True) as r:
                expect_ok(r, f"WADO-RS of study {study['study']}")
                for chunk in r.iter_content(chunk_size=1 << 20):
                    n += len(chunk)
            # Boundaries differ between answers by a few bytes per part at most.
            size, count = checked[study["study"]]
            if abs(n - size) > 64 * count + 1024:
                fail(f"WADO-RS of study {study['study']}: {n} bytes, the checked answer had {size}")
            total += n
        seconds = time.perf_counter() - start
        per_round.append({"bytes": total, "seconds": seconds, "mb_s": total / seconds / 1e6})
    return {"mb_s": statistics.median(x["mb_s"] for x in per_round), "rounds": per_round,
            "parts_per_study": [c for _, c in checked.values()]}


def stow(base, manifest_path):
    """One thread (one keep-alive session) per study, each posting its prebuilt bodies one
    after another; instances/s over the wall time of all. Every answer is kept and checked
    after the clock stops: 200, each instance referenced, no FailedSOPSequence."""
    m = load(manifest_path)
    corpus = Path(m["studies"][0]["files"][0]).parent.parent / "stow-bodies"
    clients = sorted(corpus.glob("client*"))
    if len(clients) != len(m["studies"]):
        fail(f"{corpus}: {len(clients)} client directories for {len(m['studies'])} studies")
    answers = [[] for _ in clients]
    errors = []
    barrier = threading.Barrier(len(clients) + 1)

    def client(k):
        try:
            s = session()
            bodies = sorted(clients[k].glob("batch*.bin"))
            barrier.wait()
            for body_file in bodies:
                body = body_file.read_bytes()
                r = s.post(f"{base}/studies", data=body,
                           headers={"Content-Type": STOW_TYPE, "Accept": DICOM_JSON})
                answers[k].append((body_file.name, r.status_code, r.content))
        except Exception as e:  # reported below, after the other clients are done
            errors.append(f"client {k}: {e!r}")
            barrier.abort()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(len(clients))]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        fail("; ".join(errors))
    stored = 0
    for k, client_answers in enumerate(answers):
        for name, status, content in client_answers:
            want = int(name.split("-")[1].split(".")[0])
            if status != 200:
                fail(f"STOW-RS client {k} {name}: HTTP {status}: {content[:300]!r}")
            answer = json.loads(content)
            if isinstance(answer, list):  # one data set, possibly wrapped in an array
                answer = answer[0] if answer else {}
            if values(answer, "00081198"):
                fail(f"STOW-RS client {k} {name}: FailedSOPSequence {values(answer, '00081198')[:2]}")
            referenced = values(answer, "00081199")
            if len(referenced) != want:
                fail(f"STOW-RS client {k} {name}: {len(referenced)} instances referenced, expected {want}")
            stored += want
    if stored != m["instances"]:
        fail(f"STOW-RS stored {stored} instances, the corpus has {m['instances']}")
    return {"instances": stored, "seconds": seconds, "instances_s": stored / seconds,
            "requests": sum(len(a) for a in answers), "clients": len(clients)}


def null_server():
    """An HTTP/1.1 keep-alive server that answers every request with `[]` at once (for floor)."""
    import socket
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 2\r\n\r\n[]"

    def handle(conn):
        pending = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            pending += data
            while b"\r\n\r\n" in pending:
                pending = pending.split(b"\r\n\r\n", 1)[1]
                conn.sendall(answer)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def floor(n):
    """The client's own share of a search's latency: the same timed GET against a server (a
    separate process) that answers at once. A server's p50 cannot go below this."""
    import subprocess
    server = subprocess.Popen([sys.executable, __file__, "null-server"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        s = session()
        times = []
        for i in range(n + 5):
            seconds, r = timed_get(s, f"http://127.0.0.1:{port}/dicom-web/studies?PatientID=X",
                                   headers={"Accept": DICOM_JSON})
            expect_ok(r, "null server")
            if i >= 5:
                times.append(seconds)
        return percentiles(times)
    finally:
        server.kill()
        server.wait()


# ---------------------------------------------------------------- the table

def rounds_of(run_dir, label):
    """Every round's result of one server, in round order."""
    files = glob.glob(os.path.join(run_dir, f"{glob.escape(label)}.r*.json"))
    files.sort(key=lambda f: int(re.search(r"\.r(\d+)\.json$", f).group(1)))
    if not files:
        fail(f"no results of {label} in {run_dir}")
    return [load(f) for f in files]


def table(run_dir, labels, targets):
    """Medians over the rounds, Orthanc's against each Strata's; every round's ratio listed
    (round k of Strata against round k of Orthanc)."""
    results = {label: rounds_of(run_dir, label) for label in labels}
    orthanc = results[labels[0]]
    client_floor = load(os.path.join(run_dir, "floor.json"))["p50"]
    rows = [
        ("QIDO study search by PatientID, p50 (ms)", lambda r: r["qido"]["patient_id"]["p50"], "latency", "qido"),
        ("QIDO study search by PatientName wildcard, p50 (ms)", lambda r: r["qido"]["patient_name"]["p50"], "latency", "qido"),
        (f"series /metadata ({orthanc[0]['metadata']['instances']} instances), p50 (ms)", lambda r: r["metadata"]["p50"], "latency", "metadata"),
        ("WADO-RS whole study, MB/s (median of rounds)", lambda r: r["wado"]["mb_s"], "throughput", "wado"),
        (f"STOW-RS, {orthanc[0]['stow']['clients']} clients, instances/s", lambda r: r["stow"]["instances_s"], "throughput", "stow"),
        ("STOW-RS, server CPU ms per instance (Strata on PostgreSQL: with PostgreSQL's; not a target)", lambda r: r["stow"]["cpu_ms"], "latency", None),
        ("C-STORE load (4 storescu), instances/s (not a target)", lambda r: r["load"]["instances_s"], "throughput", None),
    ]

    def ratio(o, st, kind):
        return (o / st) if kind == "latency" else (st / o)

    n = len(orthanc)
    print(f"Medians of {n} round(s); the servers' order was reversed every other round.")
    print()
    print("| metric | Strata index | Orthanc | Strata | Strata vs Orthanc | every round | target | |")
    print("|---|---|---:|---:|---:|---|---:|---|")
    for label in labels[1:]:
        strata = results[label]
        for name, get, kind, target_key in rows:
            o, st = statistics.median([get(r) for r in orthanc]), statistics.median([get(r) for r in strata])
            r = ratio(o, st, kind)
            each = " ".join("%.2fx" % ratio(get(a), get(b), kind) for a, b in zip(orthanc, strata))
            target = targets.get(target_key)
            verdict = "" if target is None else ("met" if r >= target else "**not met**")
            print(f"| {name} | {label.removeprefix('strata-')} | {o:.2f} | {st:.2f} | {r:.2f}x | {each} | "
                  f"{'' if target is None else '>= %gx' % target} | {verdict} |")
    print()
    print("Latency ratio: Orthanc p50 / Strata p50; throughput ratio: Strata / Orthanc; CPU ratio:"
          " Orthanc's / Strata's (above 1: Strata used less).")
    print("Client floor: the same timed GET (requests.Session) against a server that answers `[]` at"
          " once takes %.2f ms p50: it is part of every latency above, so a QIDO ratio cannot exceed"
          " Orthanc p50 / %.2f ms = %.1fx." % (client_floor, client_floor,
                                            statistics.median([r["qido"]["patient_id"]["p50"] for r in orthanc]) / client_floor))
    for label in labels:
        for k, result in enumerate(results[label], 1):
            q, md = result["qido"], result["metadata"]
            print(f"- {label} round {k}: QIDO PatientID p50/p90/p99 {q['patient_id']['p50']:.2f}/{q['patient_id']['p90']:.2f}/{q['patient_id']['p99']:.2f} ms, "
                  f"PatientName p50/p90/p99 {q['patient_name']['p50']:.2f}/{q['patient_name']['p90']:.2f}/{q['patient_name']['p99']:.2f} ms; "
                  f"metadata p50/p90 {md['p50']:.1f}/{md['p90']:.1f} ms ({md['body_bytes']} bytes); "
                  f"WADO-RS rounds {' '.join('%.0f' % x['mb_s'] for x in result['wado']['rounds'])} MB/s; "
                  f"STOW-RS {result['stow']['instances_s']:.0f}/s ({result['stow']['requests']} requests in {result['stow']['seconds']:.2f} s, "
                  f"server CPU {result['stow']['cpu_ms']:.2f} ms per instance); "
                  f"C-STORE load {result['load']['seconds']:.2f} s")


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "manifest":
        out = manifest(args[0], args[1])
    elif command == "stow-bodies":
        out = stow_bodies(args[0], args[1], int(args[2]))
    elif command == "check-load":
        out = check_load(args[0].rstrip("/"), args[1])
    elif command == "qido":
        out = qido(args[0].rstrip("/"), args[1], int(args[2]))
    elif command == "metadata":
        out = metadata(args[0].rstrip("/"), args[1], int(args[2]))
    elif command == "wado":
        out = wado(args[0].rstrip("/"), args[1], int(args[2]))
    elif command == "stow":
        out = stow(args[0].rstrip("/"), args[1])
    elif command == "floor":
        out = floor(int(args[0]))
    elif command == "null-server":
        null_server()
        return 0
    elif command == "table":
        targets = {"metadata": 10, "qido": 3, "wado": 2, "stow": 2}
        table(args[0], args[1:], targets)
        return 0
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out))
    line = describe(command, out)
    if line:
        print(f"  {line}", file=sys.stderr)
    return 0


def describe(command, out):
    """One line for the console; stdout holds the JSON."""
    if command == "floor":
        return "client floor (GET against a server answering at once) p50/p99: %.2f/%.2f ms" % (out["p50"], out["p99"])
    if command == "check-load":
        return f"checked by QIDO-RS: {out['studies']} studies, {out['instances']} instances"
    if command == "qido":
        return ("QIDO-RS p50/p99: PatientID %.2f/%.2f ms, PatientName wildcard %.2f/%.2f ms (%d each)"
                % (out["patient_id"]["p50"], out["patient_id"]["p99"], out["patient_name"]["p50"],
                   out["patient_name"]["p99"], out["patient_id"]["n"]))
    if command == "metadata":
        return ("series metadata (%d instances, %d bytes) p50/p90: %.1f/%.1f ms (%d requests)"
                % (out["instances"], out["body_bytes"], out["p50"], out["p90"], out["n"]))
    if command == "wado":
        return ("WADO-RS whole study (%s parts, all checked): %.1f MB/s median, rounds %s"
                % ("/".join(map(str, out["parts_per_study"])), out["mb_s"],
                   " ".join("%.1f" % x["mb_s"] for x in out["rounds"])))
    if command == "stow":
        return ("STOW-RS: %d instances in %d requests by %d clients, %.2f s, %.1f instances/s (all answers checked)"
                % (out["instances"], out["requests"], out["clients"], out["seconds"], out["instances_s"]))
    return None


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BenchError as e:
        print(f"dicomweb_client: {e}", file=sys.stderr)
        sys.exit(1)
