#!/usr/bin/env python3
"""Load of bench/soak.sh: N associations (threads) doing mixed DICOM and DICOMweb work for a
fixed time, recording every operation's latency and outcome.

Each worker opens an association, runs a few operations on it, releases it and starts again
(so association set-up is part of the load). An operation is, by weight: C-STORE of a new
instance (into a study of the worker's own, new every 50 stores) 40 %, C-FIND at study level
20 %, C-MOVE of a study to the in-process destination 10 %, C-GET of a series 10 %, and a
DICOMweb read (a series' /metadata or a whole-study WADO-RS retrieval) 20 %. Studies to read
are drawn from the seed corpus and from what the workers stored. Every answer is checked: a
failure status, an exception, or a wrong count is an error of that operation.

Usage: soak_client.py --port P --base URL --token T --corpus DIR --seconds S --associations N
       --dest-port D --out results.json
Prints nothing but errors while it runs; writes the results as JSON.
"""
import argparse
import copy
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind as FIND,
    StudyRootQueryRetrieveInformationModelGet as GET,
    StudyRootQueryRetrieveInformationModelMove as MOVE,
)

OPS_PER_ASSOCIATION = 8
WEIGHTS = [("store", 40), ("find", 20), ("move", 10), ("get", 10), ("dicomweb", 20)]


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = {}
        self.errors = {}
        self.examples = {}

    def record(self, op, seconds, error=None):
        with self.lock:
            if error is None:
                self.latency.setdefault(op, []).append(seconds * 1000.0)
            else:
                self.errors[op] = self.errors.get(op, 0) + 1
                self.examples.setdefault(op, str(error)[:300])


class Known:
    """Studies (and one series of each) that exist, to read from."""

    def __init__(self, pairs):
        self.lock = threading.Lock()
        self.pairs = list(pairs)

    def add(self, study, series):
        with self.lock:
            self.pairs.append((study, series))

    def pick(self):
        with self.lock:
            return random.choice(self.pairs)


def seed(corpus):
    templates, pairs = [], {}
    for path in sorted(Path(corpus).rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            ds = dcmread(path)
            pairs[ds.StudyInstanceUID] = ds.SeriesInstanceUID
            if len(templates) < 8:
                templates.append(ds)
    if not templates:
        sys.exit(f"no DICOM files under {corpus}")
    return templates, list(pairs.items())


def new_association(port):
    ae = AE(ae_title="SOAK")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(CTImageStorage)
    for context in (FIND, MOVE, GET):
        ae.add_requested_context(context)
    # SCU for our C-STOREs, SCP for the C-STOREs of a C-GET.
    roles = [build_role(CTImageStorage, scu_role=True, scp_role=True)]
    handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]
    assoc = ae.associate("127.0.0.1", port, ae_title="STRATA", ext_neg=roles, evt_handlers=handlers)
    if not assoc.is_established:
        raise RuntimeError("association refused or aborted")
    return assoc


def final_status(responses):
    status = None
    for code, _ in responses:
        if code:
            status = code.Status
    return status


def worker(number, args, templates, known, results, deadline):
    rng = random.Random(number)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args.token}"
    study = series = None
    stored_in_study = 50
    ops = [op for op, weight in WEIGHTS for _ in range(weight)]
    while time.time() < deadline:
        start = time.time()
        try:
            assoc = new_association(args.port)
        except Exception as error:  # noqa: BLE001 - every failure is counted, none stops the load
            results.record("associate", time.time() - start, error)
            time.sleep(0.5)
            continue
        results.record("associate", time.time() - start)
        try:
            for _ in range(OPS_PER_ASSOCIATION):
                if time.time() >= deadline:
                    break
                op = rng.choice(ops)
                start = time.time()
                try:
                    if op == "store":
                        if stored_in_study >= 50:
                            study, series, stored_in_study = generate_uid(), generate_uid(), 0
                        ds = copy.deepcopy(rng.choice(templates))
                        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                        ds.SOPInstanceUID = generate_uid()
                        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                        ds.PatientID = f"SOAK{number:02d}"
                        status = assoc.send_c_store(ds)
                        if not status or status.Status != 0:
                            raise RuntimeError(f"C-STORE status {getattr(status, 'Status', None)}")
                        stored_in_study += 1
                        if stored_in_study == 1:
                            known.add(study, series)
                    elif op == "find":
                        target, _ = known.pick()
                        query = Dataset()
                        query.QueryRetrieveLevel = "STUDY"
                        query.StudyInstanceUID = target
                        query.PatientID = ""
                        query.NumberOfStudyRelatedInstances = ""
                        matches, status = 0, None
                        for code, identifier in assoc.send_c_find(query, FIND):
                            if code and code.Status in (0xFF00, 0xFF01):
                                matches += 1
                            elif code:
                                status = code.Status
                        if status != 0 or matches != 1:
                            # Asked again at once: tells a passing state from a lasting one.
                            again = sum(1 for code, _ in assoc.send_c_find(query, FIND)
                                        if code and code.Status in (0xFF00, 0xFF01))
                            raise RuntimeError(f"C-FIND status {status}, {matches} matches for {target}"
                                               f" at {time.strftime('%H:%M:%S')}; asked again: {again}")
                    elif op == "move":
                        target, _ = known.pick()
                        query = Dataset()
                        query.QueryRetrieveLevel = "STUDY"
                        query.StudyInstanceUID = target
                        status = final_status(assoc.send_c_move(query, "SOAKDEST", MOVE))
                        if status != 0:
                            raise RuntimeError(f"C-MOVE status {status}")
                    elif op == "get":
                        target, target_series = known.pick()
                        query = Dataset()
                        query.QueryRetrieveLevel = "SERIES"
                        query.StudyInstanceUID = target
                        query.SeriesInstanceUID = target_series
                        status = final_status(assoc.send_c_get(query, GET))
                        if status != 0:
                            raise RuntimeError(f"C-GET status {status}")
                    else:
                        target, target_series = known.pick()
                        if rng.random() < 0.5:
                            url = f"{args.base}/studies/{target}/series/{target_series}/metadata"
                            answer = session.get(url, headers={"Accept": "application/dicom+json"}, timeout=120)
                            if answer.status_code != 200 or not answer.json():
                                raise RuntimeError(f"/metadata {answer.status_code}")
                        else:
                            url = f"{args.base}/studies/{target}"
                            accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
                            answer = session.get(url, headers={"Accept": accept}, timeout=120)
                            if answer.status_code != 200 or len(answer.content) < 132:
                                raise RuntimeError(f"WADO-RS {answer.status_code}")
                    results.record(op, time.time() - start)
                except Exception as error:  # noqa: BLE001
                    results.record(op, time.time() - start, error)
                    if not assoc.is_established:
                        break
        finally:
            if assoc.is_established:
                assoc.release()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    parser = argparse.ArgumentParser()
    for name in ("port", "dest-port", "seconds", "associations"):
        parser.add_argument(f"--{name}", type=int, required=True)
    for name in ("base", "token", "corpus", "out"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()

    destination = AE(ae_title="SOAKDEST")
    destination.add_supported_context(CTImageStorage)
    received = {"count": 0}

    def on_store(event):
        received["count"] += 1
        return 0x0000

    server = destination.start_server(
        ("127.0.0.1", args.dest_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    templates, pairs = seed(args.corpus)
    known = Known(pairs)
    results = Results()
    deadline = time.time() + args.seconds
    threads = [
        threading.Thread(target=worker, args=(n, args, templates, known, results, deadline))
        for n in range(args.associations)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.shutdown()
    table = {}
    for op in ["associate"] + [op for op, _ in WEIGHTS]:
        values = results.latency.get(op, [])
        table[op] = {
            "ok": len(values),
            "errors": results.errors.get(op, 0),
            "p50_ms": round(statistics.median(values), 1) if values else None,
            "p99_ms": round(percentile(values, 0.99), 1) if values else None,
            "example_error": results.examples.get(op),
        }
    out = {"seconds": args.seconds, "associations": args.associations, "ops": table,
           "moved_instances_received": received["count"], "studies_known": len(known.pairs)}
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
