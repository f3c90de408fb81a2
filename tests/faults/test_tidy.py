"""The tree stays tidy: no merge leftovers committed, no two modules importing each other (not even inside a
function), and the wire protocol split into modules of one job each behind `pipeline.wire`."""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests.test_layers import imports, modules

REPO = Path(__file__).resolve().parents[2]


def test_no_merge_leftovers_are_committed():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    leftovers = [f for f in files if f.endswith((".orig", ".rej", ".BACKUP", ".LOCAL", ".REMOTE"))]
    assert not leftovers


def test_no_two_modules_import_each_other_even_inside_a_function():
    known = modules()
    graph = {m: {t for t, _, _ in imports(m, p, known)} for m, p in known.items()}
    mutual = sorted(f"{a} <-> {b}" for a in graph for b in graph[a]
                    if a < b and a in graph.get(b, ()) and not known[b].name == "__init__.py"
                    and not known[a].name == "__init__.py")
    assert not mutual


def test_the_wire_modules_are_small_and_pipeline_wire_still_offers_every_name():
    from pipeline import wire

    for path in (REPO / "pipeline").glob("wire*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
    for name in ("decode", "unpackb", "encode_topology", "encode_frame", "encode_end", "topic", "pack_array",
                 "pack_quantised", "unpack_array", "RecordWriter", "read_recording", "Record", "WireError",
                 "is_stream_id", "MAX_STREAM_ID", "MAX_COUNT", "DEFAULT_MAX_MESSAGE_BYTES", "synthetic_mesh_frame",
                 "SCHEMA_VERSION", "COORDINATES", "EndOfStream", "now"):
        assert hasattr(wire, name), name
