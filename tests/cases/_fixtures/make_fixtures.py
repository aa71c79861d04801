#!/usr/bin/env python3
"""make_fixtures.py - regenerate the shared study fixtures of tests/cases.

Each fixture is what a real Orthanc (Debian's 1.10) answers for one study:
    {"study": GET /studies/{id}, "series": GET /studies/{id}/series,
     "instances": GET /studies/{id}/instances}
The studies are described in SPEC below; this script starts a private
Orthanc on a loopback port chosen at run time (temporary storage, no DICOM
port), creates every instance with POST /tools/create-dicom, removes the
tags a fixture wants truly absent (Orthanc fills some dates in by itself)
with /instances/{id}/modify, and writes _fixtures/<name>.json.

Run it by hand when SPEC changes:  python3 tests/cases/_fixtures/make_fixtures.py
(LastUpdate and FileUuid differ from one run to the next; nothing else.)
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = "1.2.826.0.1.3680043.10.1047"  # UIDs of these fixtures

UTF8 = {"SpecificCharacterSet": "ISO_IR 192"}

SPEC = {
    # A brain MR: six series (numbers 1, 2, 3, 4, 10, 99), multi-valued tags,
    # an SR without SeriesDate / BodyPartExamined.
    "mr_brain": {
        "uid": ROOT + ".1",
        "tags": {
            "PatientID": "P001", "PatientName": "DOE^JOHN^Q", "PatientBirthDate": "19800615",
            "PatientSex": "M", "0010,1000": "ALT1\\ALT2",
            "StudyID": "42", "AccessionNumber": "ACC-7", "StudyDescription": "Brain MR with contrast",
            "StudyDate": "20240131", "StudyTime": "101500", "InstitutionName": "General Hospital",
            "ReferringPhysicianName": "SMITH^ANNA", "RequestedProcedureDescription": "MRI HEAD",
        },
        "series": [
            {"tags": {"SeriesNumber": "1", "Modality": "MR", "SeriesDescription": "T1 MPRAGE",
                      "ProtocolName": "t1_mprage_sag", "BodyPartExamined": "HEAD",
                      "SeriesDate": "20240131", "SeriesTime": "101600",
                      "SeriesType": "STATIC\\IMAGE", "OperatorsName": "TECH^ONE\\TECH^TWO",
                      "ImageOrientationPatient": "1\\0\\0\\0\\1\\0"},
             "instances": [{"InstanceNumber": "1", "ImageComments": "first slice", "AcquisitionNumber": "1"},
                           {"InstanceNumber": "2", "AcquisitionNumber": "1"},
                           {"InstanceNumber": "3", "AcquisitionNumber": "1"}]},
            {"tags": {"SeriesNumber": "2", "Modality": "MR", "SeriesDescription": "DWI b1000",
                      "BodyPartExamined": "HEAD", "SeriesDate": "20240131", "SeriesTime": "102000"},
             "instances": [{"InstanceNumber": "1"}, {"InstanceNumber": "2"}]},
            {"tags": {"SeriesNumber": "3", "Modality": "MR", "SeriesDescription": "DWI b0",
                      "BodyPartExamined": "HEAD", "SeriesDate": "20240131", "SeriesTime": "102100"},
             "instances": [{"InstanceNumber": "1"}]},
            {"tags": {"SeriesNumber": "4", "Modality": "MR", "SeriesDescription": "dwi TRACE",
                      "BodyPartExamined": "HEAD", "SeriesDate": "20240131", "SeriesTime": "102200"},
             "instances": [{"InstanceNumber": "1"}]},
            {"tags": {"SeriesNumber": "10", "Modality": "MR", "SeriesDescription": "ADC map",
                      "BodyPartExamined": "HEAD", "ContrastBolusAgent": "Gadovist",
                      "SeriesDate": "20240131", "SeriesTime": "103000"},
             "instances": [{"InstanceNumber": "1"}]},
            {"tags": {"SeriesNumber": "99", "Modality": "SR", "SeriesDescription": "Radiology report",
                      "SeriesTime": "120000"},
             "remove": ["SeriesDate"],
             "instances": [{"InstanceNumber": "1"}]},
        ],
    },
    # A CT: every series CT, an empty AccessionNumber, no StudyID, a
    # fractional StudyTime.
    "ct_chest": {
        "uid": ROOT + ".2",
        "tags": {
            "PatientID": "P002", "PatientName": "ROE^JANE", "PatientBirthDate": "19451201",
            "PatientSex": "F", "AccessionNumber": "", "StudyDescription": "CT THORAX",
            "StudyDate": "20230615", "StudyTime": "235959.5",
        },
        "remove": ["StudyID"],
        "series": [
            {"tags": {"SeriesNumber": "1", "Modality": "CT", "SeriesDescription": "Scout",
                      "SeriesDate": "20230615", "SeriesTime": "235959"},
             "instances": [{"InstanceNumber": "1"}]},
            {"tags": {"SeriesNumber": "2", "Modality": "CT", "SeriesDescription": "Lung 1.0mm",
                      "ContrastBolusAgent": "IOMERON", "SeriesDate": "20230616", "SeriesTime": "000100"},
             "instances": [{"InstanceNumber": "7"}, {"InstanceNumber": "12"}]},
        ],
    },
    # Non-Latin names (UTF-8): Japanese person name with three groups, Greek
    # institution and referring physician.
    "japanese": {
        "uid": ROOT + ".3",
        "tags": dict(UTF8, **{
            "PatientID": "JP-01", "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
            "StudyID": "7", "AccessionNumber": "受付123", "StudyDescription": "頭部 MRI",
            "StudyDate": "20240301", "StudyTime": "090000",
            "InstitutionName": "Νοσοκομείο ΑΘΗΝΩΝ", "ReferringPhysicianName": "Παπαδόπουλος^Νίκος",
        }),
        "series": [
            {"tags": {"SeriesNumber": "1", "Modality": "MR", "SeriesDescription": "拡散強調 DWI",
                      "SeriesDate": "20240301", "SeriesTime": "090500"},
             "instances": [{"InstanceNumber": "1"}]},
        ],
    },
    # Only an ideographic name group.
    "ideographic": {
        "uid": ROOT + ".4",
        "tags": dict(UTF8, **{
            "PatientID": "JP-02", "PatientName": "=佐藤^花子", "StudyID": "8",
            "StudyDescription": "胸部 CT", "StudyDate": "20240302", "StudyTime": "100000",
        }),
        "series": [
            {"tags": {"SeriesNumber": "1", "Modality": "CT", "SeriesDescription": "Chest",
                      "SeriesDate": "20240302", "SeriesTime": "100500"},
             "instances": [{"InstanceNumber": "1"}]},
        ],
    },
    # Tag values that try to break out of the storage folder or the shell.
    "hostile": {
        "uid": ROOT + ".5",
        "tags": dict(UTF8, **{
            "PatientID": "../../etc/passwd", "PatientName": "Evil/../Name^X",
            "StudyID": "x:y*?<>|", "AccessionNumber": "a\tb", "StudyDescription": "$(reboot); rm -rf /",
            "StudyDate": "20240101", "StudyTime": "000000", "InstitutionName": "C:\\Windows",
        }),
        "series": [
            {"tags": {"SeriesNumber": "", "Modality": "OT", "SeriesDescription": "..",
                      "SeriesTime": "000000"},
             "remove": ["SeriesDate"],
             "instances": [{"InstanceNumber": "1"}]},
        ],
    },
    # Almost nothing: empty PatientID, no name, no StudyID, no series number
    # or date, no descriptions.
    "sparse": {
        "uid": ROOT + ".6",
        "tags": {"PatientID": "", "StudyDate": "20220202", "StudyTime": "120000"},
        "remove": ["StudyID", "PatientName"],
        "series": [
            {"tags": {"Modality": "MR", "SeriesTime": "120000"},
             "remove": ["SeriesDate", "SeriesNumber"],
             "instances": [{}]},
        ],
    },
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Orthanc:
    def __init__(self, workdir):
        self.port = free_port()
        cfg = {"Name": "fixtures", "StorageDirectory": workdir + "/db", "IndexDirectory": workdir + "/db",
               "HttpPort": self.port, "HttpBindAddress": "127.0.0.1", "DicomServerEnabled": False,
               "DicomPort": free_port(), "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
               "HttpCompressionEnabled": False, "Plugins": []}
        path = workdir + "/orthanc.json"
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.log = open(workdir + "/orthanc.log", "w")
        self.proc = subprocess.Popen(["Orthanc", path], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/system")
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("Orthanc did not start; see " + workdir + "/orthanc.log")
                time.sleep(0.05)

    def request(self, method, url, body=None, raw=False):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, url), data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                out = r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError("%s %s: %s" % (method, url, e.read().decode()))
        return out if raw else json.loads(out or b"null")

    def get(self, url):
        return self.request("GET", url)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def make(o, name, spec):
    study_id = None
    for si, series in enumerate(spec["series"], 1):
        for ii, inst in enumerate(series["instances"], 1):
            tags = dict(spec["tags"])
            tags.update(series["tags"])
            tags.update(inst)
            tags["StudyInstanceUID"] = spec["uid"]
            tags["SeriesInstanceUID"] = "%s.%d" % (spec["uid"], si)
            tags["SOPInstanceUID"] = "%s.%d.%d" % (spec["uid"], si, ii)
            tags.setdefault("InstanceCreationDate", "20240101")
            tags.setdefault("InstanceCreationTime", "000000")
            r = o.request("POST", "/tools/create-dicom", {"Force": True, "Tags": tags})
            remove = spec.get("remove", []) + series.get("remove", [])
            if remove:
                data = o.request("POST", "/instances/%s/modify" % r["ID"],
                                 {"Remove": remove, "Force": True,
                                  "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]},
                                 raw=True)
                o.request("DELETE", "/instances/" + r["ID"])
                r = o.request("POST", "/instances", data)
            study_id = r["ParentStudy"]
    return {"study": o.get("/studies/" + study_id),
            "series": o.get("/studies/%s/series" % study_id),
            "instances": o.get("/studies/%s/instances" % study_id)}


def main():
    only = sys.argv[1:]
    work = tempfile.mkdtemp(prefix="ar-fixtures-")
    o = Orthanc(work)
    try:
        for name in sorted(SPEC):
            if only and name not in only:
                continue
            fixture = make(o, name, SPEC[name])
            with open(os.path.join(HERE, name + ".json"), "w", encoding="utf-8") as f:
                json.dump(fixture, f, indent=1, sort_keys=True, ensure_ascii=False)
                f.write("\n")
            print("wrote", name)
    finally:
        o.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
