#!/usr/bin/env python3
"""test_requests.py - issue 2: the study metadata is fetched once per study
and shared by all rules: the number of HTTP requests autorthanc sends to
decide all rules for a study does not grow with the number of rules or of
series.  Counted by a proxy between autorthanc and Orthanc (the change log,
/system and the instance files themselves are not decision requests)."""

import os
import sys

sys.path.insert(0, os.path.join(os.environ.get("AR_SOURCE_DIR", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "lib"))
import harness as h  # noqa: E402


def decision_requests(reqs):
    out = []
    for method, path in reqs:
        p = path.split("?")[0]
        if p in ("/changes", "/system") or (p.startswith("/instances/") and p.endswith("/file")):
            continue
        out.append((method, path))
    return out


def ids_of(o, s):
    ids = {s["study"]}
    for ser in s["series"]:
        ids.add(ser["id"])
        ids.update(i["id"] for i in ser["instances"])
    return ids


def per_study(reqs, studies):
    """{label: number of requests naming one of that study's ids}, plus
    'other' for requests naming none."""
    counts = {label: 0 for label in studies}
    counts["other"] = 0
    for _, path in reqs:
        owner = [label for label, ids in studies.items() if any(i in path for i in ids)]
        counts[owner[0] if owner else "other"] += 1
    return counts


def test_requests_do_not_grow_with_rules_or_series(t):
    o = t.orthanc("COUNT", dicom=False)
    proxy = t.proxy(o)
    small = o.create_study("P70", "REQ", "1",
                           [{"SeriesNumber": "1", "SeriesDate": "20241101", "Modality": "MR",
                             "instances": 2}],
                           study_tags={"StudyDescription": "REQ SMALL"})
    big = o.create_study("P71", "REQ", "2",
                         [{"SeriesNumber": str(n), "SeriesDate": "20241101", "Modality": "MR",
                           "instances": 2} for n in range(1, 9)],
                         study_tags={"StudyDescription": "REQ BIG"})
    o.wait_stable(small["study"])
    o.wait_stable(big["study"])
    studies = {"1 series": ids_of(o, small), "8 series": ids_of(o, big)}

    results = {}
    for nrules in (1, 24):
        ws = t.workspace(o, name=f"rules{nrules}")
        for i in range(nrules):
            # rules that match nothing: every request is a decision request
            if i % 2 == 0:
                ws.rule(f"study{i:02d}", tags=[("StudyDescription", "Study", f"no-such-{i}")])
            else:
                ws.rule(f"series{i:02d}", check_on="Series",
                        tags=[("SeriesDescription", "Series", f"no-such-{i}")])
        proxy.take()
        ws.run_once(env={"AUTORTHANC_ORTHANC_URL": proxy.url})
        reqs = decision_requests(proxy.take())
        results[nrules] = (per_study(reqs, studies), reqs)
        assert not os.listdir(ws.storage)

    one, many = results[1][0], results[24][0]
    detail = (f"1 rule: {one}, 24 rules: {many}\nrequests with 24 rules:\n  "
              + "\n  ".join(f"{m} {p}" for m, p in results[24][1][:40]))
    assert one == many, "the number of requests grows with the number of rules: " + detail
    assert one["1 series"] == one["8 series"], \
        "the number of requests grows with the number of series: " + detail
    assert one["1 series"] > 0, "no request named the study at all? " + detail


def test_export_fetches_each_file_once(t):
    o = t.orthanc("COUNTDL", dicom=False)
    proxy = t.proxy(o)
    ws = t.workspace(o)
    ws.rule("a", tags=[("PatientID", "Patient", "P72")])
    s = o.create_study("P72", "DL", "1",
                       [{"SeriesNumber": str(n), "SeriesDate": "20241102", "instances": 3}
                        for n in (1, 2)])
    o.wait_stable(s["study"])
    ws.run_once(env={"AUTORTHANC_ORTHANC_URL": proxy.url})
    files = [p.split("?")[0] for m, p in proxy.take() if p.split("?")[0].endswith("/file")]
    want = sorted(f"/instances/{i}/file" for i in s["instances"])
    assert sorted(files) == want, f"file requests {sorted(files)} != one per instance {want}"
    h.assert_tree_matches(o, ws.storage, h.expected_files(o, s["study"], "a/P72-DL-EX1"))


if __name__ == "__main__":
    h.main()
