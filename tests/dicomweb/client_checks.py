"""DICOMweb checks with real clients (dicomweb-client, requests, pydicom) against a running Strata.

Called by tests/dicomweb.rs; every check raises (non-zero exit, message on stderr) on failure.

  client_checks.py read URL TOKEN STORED_DIR    searches, retrievals, metadata and frames of
                                                the studies whose stored files are in STORED_DIR
  client_checks.py store URL TOKEN SEND_DIR     store_instances of every file in SEND_DIR,
                                                then read each back and compare
"""

import io
import sys
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def fail(message):
    raise SystemExit(f"FAILED: {message}")


def client(url, token):
    return DICOMwebClient(url=url, headers={"Authorization": f"Bearer {token}"})


def part10_files(directory):
    files = []
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and ".incoming" not in path.parts:
            with open(path, "rb") as f:
                head = f.read(132)
            if head[128:132] == b"DICM":
                files.append(path)
    return files


def data_set_bytes(part10):
    """The bytes after the file meta group, as stored or as sent."""
    # (0002,0000) right after the preamble and "DICM" gives the meta group's length.
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length:]


def multipart_parts(response):
    content_type = response.headers["Content-Type"]
    boundary = [p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary=")][0]
    body = response.content
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        header, _, content = chunk.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        parts.append((header.decode(errors="replace"), content))
    return parts


def bulk(entry):
    return "BulkDataURI" in entry or "InlineBinary" in entry


def read_checks(url, token, stored_dir):
    dw = client(url, token)
    stored = {}
    for path in part10_files(stored_dir):
        ds = pydicom.dcmread(path)
        stored[ds.SOPInstanceUID] = (path, ds)
    if not stored:
        fail("no stored files to compare with")
    studies = sorted({ds.StudyInstanceUID for _, ds in stored.values()})
    any_ds = next(iter(stored.values()))[1]

    # Searches with filters.
    found = dw.search_for_studies(search_filters={"PatientID": any_ds.PatientID})
    uids = {s["0020000D"]["Value"][0] for s in found}
    if any_ds.StudyInstanceUID not in uids:
        fail(f"study search by PatientID did not find {any_ds.StudyInstanceUID}: {uids}")
    name = str(any_ds.PatientName)
    found = dw.search_for_studies(search_filters={"PatientName": name[:3] + "*"}, fields=["StudyDescription"])
    if not any(s["0020000D"]["Value"][0] == any_ds.StudyInstanceUID for s in found):
        fail("wildcard PatientName search missed the study")
    if not all("00080056" in s and "00081190" in s for s in found):
        fail("study answers lack InstanceAvailability or RetrieveURL")
    date = any_ds.StudyDate
    found = dw.search_for_studies(search_filters={"StudyDate": f"{date}-{date}"})
    if not found:
        fail("date range search found nothing")
    found = dw.search_for_studies(search_filters={"StudyDate": "19000101-19000102"})
    if found:
        fail(f"a date range with no study matched {len(found)}")
    series = dw.search_for_series(any_ds.StudyInstanceUID, search_filters={"Modality": any_ds.Modality})
    if any_ds.SeriesInstanceUID not in {s["0020000E"]["Value"][0] for s in series}:
        fail("series search by Modality missed the series")
    instances = dw.search_for_instances(any_ds.StudyInstanceUID, any_ds.SeriesInstanceUID)
    expected = {u for u, (_, ds) in stored.items() if ds.SeriesInstanceUID == any_ds.SeriesInstanceUID}
    if {i["00080018"]["Value"][0] for i in instances} != expected:
        fail("instance search of a series did not list exactly its instances")
    page = dw.search_for_instances(any_ds.StudyInstanceUID, limit=1, offset=1)
    if len(page) != 1:
        fail(f"limit=1 gave {len(page)} answers")

    # Retrievals: data sets byte-identical (raw multipart) and equal through dicomweb-client.
    headers = {"Authorization": f"Bearer {token}", "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    for study in studies:
        response = requests.get(f"{url}/studies/{study}", headers=headers, timeout=60)
        response.raise_for_status()
        parts = multipart_parts(response)
        want = {u for u, (_, ds) in stored.items() if ds.StudyInstanceUID == study}
        got = {}
        for _, content in parts:
            ds = pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True)
            got[ds.SOPInstanceUID] = content
        if set(got) != want:
            fail(f"study {study}: retrieved {len(got)} instances, stored {len(want)}")
        for uid, content in got.items():
            path = stored[uid][0]
            if data_set_bytes(content) != data_set_bytes(path.read_bytes()):
                fail(f"instance {uid}: retrieved data set differs from the stored one")
        for ds in dw.retrieve_study(study, media_types=(("application/dicom", "*"),)):
            if ds != stored[ds.SOPInstanceUID][1]:
                fail(f"dicomweb-client: {ds.SOPInstanceUID} differs from the stored data set")
    # Asked for Explicit VR Little Endian, an object stored in Implicit VR Little Endian is
    # converted (losslessly).
    implicit = [ds for _, ds in stored.values() if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"]
    if not implicit:
        fail("no Implicit VR Little Endian object to check the conversion on")
    converted = dw.retrieve_instance(
        implicit[0].StudyInstanceUID, implicit[0].SeriesInstanceUID, implicit[0].SOPInstanceUID,
        media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
    )
    differing = [str(e.tag) for e in implicit[0] if e.tag not in converted or converted[e.tag].value != e.value]
    if converted.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.1" or differing:
        fail(f"an Implicit VR Little Endian object came back as {converted.file_meta.TransferSyntaxUID}, differing in {differing}")
    one = dw.retrieve_series(any_ds.StudyInstanceUID, any_ds.SeriesInstanceUID, media_types=(("application/dicom", "*"),))
    if len(one) != len(expected):
        fail("series retrieval count")
    single = dw.retrieve_instance(any_ds.StudyInstanceUID, any_ds.SeriesInstanceUID, any_ds.SOPInstanceUID, media_types=(("application/dicom", "*"),))
    if single != any_ds:
        fail("instance retrieval differs")

    # Metadata: equal to pydicom's JSON of the stored file for every non-bulk attribute.
    for uid, (path, ds) in stored.items():
        metadata = dw.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, uid)
        reference = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "bulk")
        for tag, entry in reference.items():
            if bulk(entry) or tag == "7FE00010":
                continue
            if metadata.get(tag) != entry:
                fail(f"metadata of {uid}, {tag}: {metadata.get(tag)} != {entry}")
        if "7FE00010" in ds and "BulkDataURI" not in metadata.get("7FE00010", {}):
            fail(f"metadata of {uid} lacks the Pixel Data BulkDataURI")
    series_metadata = dw.retrieve_series_metadata(any_ds.StudyInstanceUID, any_ds.SeriesInstanceUID)
    if len(series_metadata) != len(expected):
        fail("series metadata count")

    # Frames of uncompressed instances: equal to the pixel data's frames.
    checked = 0
    for uid, (path, ds) in stored.items():
        if ds.file_meta.TransferSyntaxUID not in NATIVE or "PixelData" not in ds:
            continue
        count = int(getattr(ds, "NumberOfFrames", 1) or 1)
        length = ds.Rows * ds.Columns * ds.SamplesPerPixel * ((ds.BitsAllocated + 7) // 8)
        frames = dw.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, uid, frame_numbers=list(range(1, count + 1)))
        for n, frame in enumerate(frames):
            if bytes(frame) != ds.PixelData[n * length:(n + 1) * length]:
                fail(f"frame {n + 1} of {uid} differs from the pixel data")
        if checked == 0:
            # The metadata's BulkDataURI for Pixel Data leads to the same bytes.
            metadata = dw.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, uid)
            uri = metadata["7FE00010"]["BulkDataURI"]
            # dicomweb-client sends `Host` without the port (web.py: headers['Host'] = self.host),
            # so absolute URIs built from it lack the port: point it back at the server asked.
            uri = url + uri[uri.index("/studies/"):]
            pieces = dw.retrieve_bulkdata(uri)
            if b"".join(bytes(p) for p in pieces) != ds.PixelData[: count * length]:
                fail(f"the Pixel Data BulkDataURI of {uid} does not give its pixel data")
        checked += 1
    if checked == 0:
        fail("no uncompressed instance to check frames on")
    rendered = rendered_checks(url, token, stored)
    print(f"read checks passed: {len(stored)} instances, {len(studies)} studies, frames of {checked}, {rendered} rendered")


# Pixels pydicom decodes without plugins: native syntaxes and RLE. JPEG Lossless (Process 14)
# is lossless too, so its rendering is compared with its twin's (the corpus gives instances of
# the same series and instance number the same pixels in every transfer syntax).
DECODED_BY_PYDICOM = NATIVE | {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5"}
LOSSLESS = DECODED_BY_PYDICOM | {"1.2.840.10008.1.2.4.70"}
NOT_DECODABLE_HERE = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}


def windowed(pixels, center, width):
    """PS3.3 C.11.2.1.2.1, linear function, to 8 bits."""
    import numpy as np
    x = pixels.astype(np.float64)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(y, 0, 255)


def rendered_checks(url, token, stored):
    """/rendered and /thumbnail: PNG pixels equal the stored pixels through the asked window."""
    import numpy as np
    from PIL import Image
    auth = {"Authorization": f"Bearer {token}"}
    twins = {}
    for _, ds in stored.values():
        if ds.file_meta.TransferSyntaxUID in DECODED_BY_PYDICOM and "PixelData" in ds:
            twins[(ds.SOPClassUID, ds.SeriesNumber, ds.InstanceNumber)] = ds
    center, width = 1500, 3000
    compared = refused = 0
    for uid, (_, ds) in stored.items():
        if "PixelData" not in ds:
            continue
        syntax = ds.file_meta.TransferSyntaxUID
        base = f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{uid}"
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        frame = frames  # the last frame: shows that the frame number is honoured
        path = f"{base}/frames/{frame}/rendered" if frames > 1 else f"{base}/rendered"
        answer = requests.get(path, params={"window": f"{center},{width},linear"}, headers={**auth, "Accept": "image/png"}, timeout=60)
        if syntax in NOT_DECODABLE_HERE:
            if answer.status_code != 406:
                fail(f"rendering {uid} ({syntax}) gave {answer.status_code}, 406 expected")
            refused += 1
            continue
        if answer.status_code != 200 or answer.headers.get("Content-Type") != "image/png":
            fail(f"rendering {uid} ({syntax}): {answer.status_code} {answer.headers.get('Content-Type')} {answer.text[:200]}")
        image = np.asarray(Image.open(io.BytesIO(answer.content)))
        if image.shape != (ds.Rows, ds.Columns):
            fail(f"rendering {uid}: shape {image.shape}, the instance is {ds.Rows}x{ds.Columns}")
        if syntax not in LOSSLESS:
            continue
        source = ds if syntax in DECODED_BY_PYDICOM else twins.get((ds.SOPClassUID, ds.SeriesNumber, ds.InstanceNumber))
        if source is None:
            fail(f"no uncompressed twin of {uid} to compare its rendering with")
        pixels = source.pixel_array
        if frames > 1:
            pixels = pixels[frame - 1]
        expected = windowed(pixels, center, width)
        worst = np.abs(image.astype(np.float64) - expected).max()
        if worst > 1.0:
            fail(f"rendering {uid} ({syntax}) differs from the windowed pixels by up to {worst}")
        compared += 1
    if compared == 0 or refused == 0:
        fail(f"rendered: {compared} compared, {refused} refused; the corpus should give both")

    # JPEG by default, scaled to a viewport, the frame's aspect kept; thumbnails at every level.
    ds = next(ds for _, ds in stored.values() if "PixelData" in ds and ds.file_meta.TransferSyntaxUID in NATIVE)
    base = f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    answer = requests.get(f"{base}/rendered", params={"viewport": "16,8", "quality": "80"}, headers=auth, timeout=60)
    if answer.status_code != 200 or answer.headers.get("Content-Type") != "image/jpeg":
        fail(f"default rendering: {answer.status_code} {answer.headers.get('Content-Type')}")
    if Image.open(io.BytesIO(answer.content)).size != (8, 8):
        fail(f"viewport 16,8 of a square frame gave {Image.open(io.BytesIO(answer.content)).size}")
    for level in (f"{url}/studies/{ds.StudyInstanceUID}", f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}", base):
        answer = requests.get(f"{level}/thumbnail", headers={**auth, "Accept": "image/png"}, timeout=60)
        if answer.status_code != 200:
            fail(f"thumbnail of {level}: {answer.status_code} {answer.text[:200]}")
        if Image.open(io.BytesIO(answer.content)).size != (128, 128):
            fail(f"thumbnail of {level} is {Image.open(io.BytesIO(answer.content)).size}, 128x128 expected")
    answer = requests.get(f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/rendered", headers=auth, timeout=60)
    series_count = sum(1 for _, d in stored.values() if d.SeriesInstanceUID == ds.SeriesInstanceUID)
    parts = multipart_parts(answer)
    if answer.status_code != 200 or len(parts) != series_count or not all(c.startswith(b"\xff\xd8") for _, c in parts):
        fail(f"series rendered: {answer.status_code}, {len(parts)} parts for {series_count} instances")
    for params, name in (({"window": "40"}, "window"), ({"viewport": "0,0"}, "viewport"), ({"quality": "101"}, "quality")):
        answer = requests.get(f"{base}/rendered", params=params, headers=auth, timeout=60)
        if answer.status_code != 400 or name not in answer.text:
            fail(f"bad {name}: {answer.status_code} {answer.text[:200]}")
    # WADO-URI renders too (its default contentType is image/jpeg), with its own parameter names.
    root = url[: url.rindex("/dicom-web")]
    wado = {"requestType": "WADO", "studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID}
    answer = requests.get(f"{root}/wado", params={**wado, "contentType": "image/png", "windowCenter": center, "windowWidth": width}, headers=auth, timeout=60)
    if answer.status_code != 200 or answer.headers.get("Content-Type") != "image/png":
        fail(f"WADO-URI image/png: {answer.status_code} {answer.text[:200]}")
    pixels = ds.pixel_array[0] if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 else ds.pixel_array
    if np.abs(np.asarray(Image.open(io.BytesIO(answer.content))).astype(np.float64) - windowed(pixels, center, width)).max() > 1.0:
        fail("WADO-URI rendering differs from the windowed pixels")
    answer = requests.get(f"{root}/wado", params={**wado, "rows": "8"}, headers=auth, timeout=60)
    if answer.status_code != 200 or not answer.content.startswith(b"\xff\xd8") or Image.open(io.BytesIO(answer.content)).size[1] != 8:
        fail(f"WADO-URI default (image/jpeg, rows=8): {answer.status_code} {answer.headers.get('Content-Type')}")
    answer = requests.get(f"{base}/rendered", headers={**auth, "Accept": "image/gif"}, timeout=60)
    if answer.status_code != 406:
        fail(f"rendered as image/gif: {answer.status_code}, 406 expected")
    return compared


def store_checks(url, token, send_dir):
    dw = client(url, token)
    files = part10_files(send_dir)
    datasets = [pydicom.dcmread(path) for path in files]
    syntaxes = {ds.file_meta.TransferSyntaxUID for ds in datasets}
    if len(syntaxes) < 4:
        fail(f"the corpus has {len(syntaxes)} transfer syntaxes, at least 4 are wanted")
    answer = dw.store_instances(datasets=datasets)
    failed = answer.get("FailedSOPSequence") if hasattr(answer, "get") else None
    if failed:
        fail(f"store_instances reported failures: {failed}")
    for ds in datasets:
        back = dw.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, media_types=(("application/dicom", "*"),))
        if back != ds:
            fail(f"{ds.SOPInstanceUID} ({ds.file_meta.TransferSyntaxUID}) reads back different")
    print(f"store checks passed: {len(datasets)} instances in {len(syntaxes)} transfer syntaxes")


if __name__ == "__main__":
    command, url, token, directory = sys.argv[1:5]
    {"read": read_checks, "store": store_checks}[command](url, token, directory)
