"""Processes that never run the network never import torch (about 3 s and 600+ MB each): the publish stage,
reading the mesh faces, the subscriber and the command's parent process. Each check runs in a fresh
interpreter, since this one has long imported torch."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_the_publish_stage_sets_up_and_publishes_without_torch(assets_dir):
    r = fresh(f"""
        import sys
        from pipeline import wire
        from stages.publish import PublishConfig, PublishStage
        stage = PublishStage(PublishConfig(endpoint="tcp://127.0.0.1:*"))
        from pipeline.stage import StageContext
        stage.context = StageContext(assets_dir={str(assets_dir)!r})
        stage.setup()
        stage.process(wire.synthetic_mesh_frame(2))
        stage.close()
        assert stage.counters["published"] == 1
        print("torch" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"


def test_mesh_faces_subscriber_and_the_command_line_load_without_torch(assets_dir):
    r = fresh(f"""
        import sys
        import fastmetro.assets
        faces = fastmetro.assets.load_mesh_faces({str(assets_dir)!r})
        assert faces.faces.shape == (13776, 3) and faces.coarse_faces.shape == (3442, 3)
        import pipeline.subscriber, pipeline.recording, fastmetro_stream.cli
        fastmetro_stream.cli.build_parser()
        print("torch" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"


def test_the_faces_without_torch_are_the_networks(assets_dir):
    import fastmetro.assets
    import numpy as np

    light, full = fastmetro.assets.load_mesh_faces(assets_dir), fastmetro.assets.load_mesh_data(assets_dir)
    assert np.array_equal(light.faces, full.faces) and np.array_equal(light.coarse_faces, full.coarse_faces)
    assert (light.downsample != full.downsample).nnz == 0
