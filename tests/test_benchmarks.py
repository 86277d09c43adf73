"""The benchmark harnesses still run against the code they measure: each is run by hand,
so a changed signature would otherwise surface only when someone next measures."""

from __future__ import annotations

from pathlib import Path

from benchmarks.streams import ensure_file
from benchmarks.throughput import decode_only, full_replay


def test_throughput_runs_its_baseline_and_replay_on_a_small_stream(tmp_path: Path) -> None:
    path = ensure_file(tmp_path / "mixed.jsonl", 2_000)
    rate, decoded = decode_only(path)
    assert decoded == 2_000 and rate > 0
    rate, summary = full_replay(path)
    assert summary["inputs"] == 2_000 and rate > 0


def test_fault_campaign_receiver_verifies_and_counts_webhooks() -> None:
    """benchmarks/faults.py's receiver: a signed webhook is counted by its id (twice is
    a redelivery), a forged one is refused, and refusing connections comes and goes."""
    import base64
    import datetime
    import json
    import os

    import httpx
    from standardwebhooks import Webhook

    from benchmarks.faults import Receiver

    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    receiver = Receiver(secret)
    try:
        body = json.dumps({"id": "a1", "data": {}})
        stamp = datetime.datetime.now(datetime.UTC)
        headers = {
            "webhook-id": "a1",
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": Webhook(secret).sign("a1", stamp, body),
        }
        for _ in range(2):
            assert httpx.post(receiver.url("/w"), content=body, headers=headers).status_code == 204
        forged = {**headers, "webhook-signature": "v1,AAAA"}
        assert httpx.post(receiver.url("/w"), content=body, headers=forged).status_code == 400
        receiver.refuse()
        try:
            httpx.post(receiver.url("/w"), content=body, headers=headers, timeout=2)
            raise AssertionError("the receiver still answers")
        except httpx.ConnectError:
            pass
        receiver.up()
        assert httpx.post(receiver.url("/w"), content=body, headers=headers).status_code == 204
        assert receiver.delivered("/w") == {"a1": 3}
    finally:
        receiver.close()


def test_darpa_maps_the_stream_as_midas_does_and_its_reference_runs(tmp_path: Path) -> None:
    """benchmarks/darpa.py on a four-row zip: IPs ranked among the sorted distinct IP
    strings in one id space, timestamps 1 + their rank, labels attack != '-'."""
    import zipfile

    from benchmarks.darpa import MEMBER, MidasR, nothing, parse, per_call

    rows = [
        "192.168.001.010,172.016.112.020,06/02/1998-08:01,-",
        "172.016.112.020,192.168.001.010,06/01/1998-23:59,neptune",
        "192.168.001.010,010.000.000.001,06/02/1998-08:01,-",
        "010.000.000.001,172.016.112.020,06/02/1998-08:05,smurf",
    ]
    path = tmp_path / "darpa.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MEMBER, "\n".join(rows) + "\n")
    data = parse(path)
    assert data["src"].tolist() == [2, 1, 2, 0] and data["dst"].tolist() == [1, 2, 0, 1]
    assert data["t"].tolist() == [2, 1, 2, 3]  # "06/01/1998-23:59" sorts first
    assert data["label"].tolist() == [False, True, False, True]
    reference = MidasR(rows=2, buckets=64)
    scores, wall, cpu = per_call(reference, [1] * 5 + [1] * 50, [2] * 55, [1] * 5 + [2] * 50)
    assert scores[:5].max() == 0.0 and scores[-1] > scores[5] > 0.0 and wall > 0 and cpu >= 0
    assert per_call(nothing, [1], [2], [3])[0].tolist() == [0.0]


def test_univariate_series_are_labelled_and_every_detector_scores_them() -> None:
    """benchmarks/univariate.py: a series has one count and one label per window, its
    injected events are labelled and clear of the warm-up days, and the metrics run."""
    from benchmarks.univariate import DAY_WINDOWS, WARM_DAYS, EwmaZ, build_series, metrics, run
    from models import SeasonalBaseline

    s = build_series(3, days_min=3, days_max=3)
    assert s["counts"].size == s["label"].size == 3 * DAY_WINDOWS and s["counts"].min() >= 0
    assert s["events"] and all(a >= WARM_DAYS * DAY_WINDOWS for _, a, _ in s["events"])
    assert sum(b - a for _, a, b in s["events"]) == s["label"].sum()
    for make in (EwmaZ, SeasonalBaseline):
        m = metrics([s], run(make, [s]))
        assert 0.0 <= m["roc_auc"] <= 1.0 and m["events"] == len(s["events"])
