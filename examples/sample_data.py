#!/usr/bin/env python3
"""Load a few small sample studies into an Orthanc (used by examples/demo.sh).

Usage: sample_data.py ORTHANC_URL
Each instance is made by Orthanc's POST /tools/create-dicom with explicit UIDs so that
several instances share a series, and a SOPClassUID so Orthanc can C-STORE them onward.
"""
import json
import sys
import urllib.request

MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.10.1338"  # an example UID root for demo data

STUDIES = [
    {"PatientID": "DEMO001", "PatientName": "DOE^JANE", "PatientBirthDate": "19800214",
     "PatientSex": "F", "StudyID": "1001", "StudyDate": "20240131",
     "StudyDescription": "MRI BRAIN W/O CONTRAST", "AccessionNumber": "ACC1001",
     "series": [("MR", "T1 SAG", 1, 3), ("MR", "DWI b1000", 2, 2), ("MR", "DWI b0", 3, 2),
                ("MR", "DWI ADC", 4, 2)]},
    {"PatientID": "DEMO002", "PatientName": "ROE^RICHARD", "PatientBirthDate": "19551103",
     "PatientSex": "M", "StudyID": "2001", "StudyDate": "20240205",
     "StudyDescription": "CT CHEST", "AccessionNumber": "ACC2001",
     "series": [("CT", "AXIAL 1.25", 1, 4), ("CT", "CORONAL", 2, 2)]},
    {"PatientID": "DEMO003", "PatientName": "山田^太郎", "PatientBirthDate": "20150601",
     "PatientSex": "M", "StudyID": "3001", "StudyDate": "20240210",
     "StudyDescription": "MRI HEAD PEDIATRIC", "AccessionNumber": "ACC3001",
     "series": [("MR", "T2 AX", 1, 2)]},
]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def main():
    url = sys.argv[1].rstrip("/")
    count = 0
    for si, st in enumerate(STUDIES, 1):
        study_uid = f"{ROOT}.{si}"
        for modality, desc, number, n in st["series"]:
            series_uid = f"{study_uid}.{number}"
            for k in range(1, n + 1):
                tags = {key: st[key] for key in ("PatientID", "PatientName", "PatientBirthDate",
                                                  "PatientSex", "StudyID", "StudyDate",
                                                  "StudyDescription", "AccessionNumber")}
                tags.update({
                    "StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
                    "SOPInstanceUID": f"{series_uid}.{k}", "SOPClassUID": MR if modality == "MR" else CT,
                    "Modality": modality, "SeriesDescription": desc, "SeriesNumber": str(number),
                    "SeriesDate": st["StudyDate"], "InstanceNumber": str(k),
                    "SpecificCharacterSet": "ISO_IR 192",
                })
                post(url + "/tools/create-dicom", {"Tags": tags, "Force": True})
                count += 1
    print(f"loaded {count} instances in {len(STUDIES)} sample studies")


if __name__ == "__main__":
    main()
