"""A recording with frames the wire decoder refuses (NaN or infinity in an array, a wrong field, an
absurd count) exports every other frame: each such record is skipped and counted, the export says so in
one warning line and in tracks.json, and no NaN reaches the files."""
from __future__ import annotations

import json

import msgpack
import numpy as np

from fastmetro_stream.cli import main
from pipeline import wire
from pipeline.messages import EndOfStream

FACES = np.array([[0, 1, 2]], np.int32)


def _bad(payload: bytes, edit) -> bytes:
    m = msgpack.unpackb(payload, raw=False)
    edit(m)
    return msgpack.packb(m, use_bin_type=True)


def _inf_cam_t(m):
    m["persons"][0]["cam_t"]["data"] = np.array([0, 0, np.inf], "<f4").tobytes()


def test_frames_the_decoder_refuses_are_skipped_and_counted(tmp_path, capsys):
    rec = tmp_path / "run.msgpack"
    w = wire.RecordWriter(rec)
    w.write(0.0, b"s/topology", wire.encode_topology("s", 0, FACES, ["j"] * 14, ["h"] * 17))
    bad = {2: "nan", 4: "inf", 5: "schema", 7: "seq"}
    for i in range(10):
        mf = wire.synthetic_mesh_frame(1, index=i)
        if bad.get(i) == "nan":
            mf.persons[0].vertices[5] = np.nan
        payload = wire.encode_frame(mf, "s", i)
        if bad.get(i) == "inf":
            payload = _bad(payload, _inf_cam_t)
        elif bad.get(i) == "schema":
            payload = _bad(payload, lambda m: m["persons"][0].update(box="wide"))
        elif bad.get(i) == "seq":
            payload = _bad(payload, lambda m: m.update(seq=-1))
        w.write(i / 30, b"s/frame", payload)
    w.write(1.0, b"s/end", wire.encode_end(EndOfStream("s", 10), "s", 10))
    w.close()
    out = tmp_path / "tracks"
    assert main(["export", str(rec), "-o", str(out), "--format", "npz,bvh"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "skipped 4 record(s)" in warnings[0] and "record 4" in warnings[0], err
    index = json.loads((out / "tracks.json").read_text())
    assert index["skipped_records"] == 4 and index["complete"] is False and index["frames"] == 6
    z = np.load(out / "track_0001.npz")
    assert z["frame_index"].tolist() == [0, 1, 3, 6, 8, 9]
    assert np.isfinite(z["cam_t"]).all()
    assert "nan" not in (out / "track_0001.bvh").read_text().lower()
