"""LSE-C / LSE-D of each generated segment in the video report (inference_real_video.py's job) and in the web
demo's table, with stand-in SyncNet weights and the tiny generation assets; the weights missing (auto: no
scores, true: one line before anything is generated)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.helpers import REPO_ROOT, compose_cfg, write_video
from tests.tiny_generation import generation_overrides, make_tiny_assets
from utils.errors import LipVoicerError

EXAMPLE = REPO_ROOT / "examples" / "synthetic_clip.mp4"
FRAMES = 10   # one segment of 10 frames: 5 SyncNet windows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from dataloaders.video_io.decode import read_video
    from models.syncnet import SyncNet

    root = tmp_path_factory.mktemp("segment_sync")
    assets = make_tiny_assets(root / "assets")
    frames, _ = read_video(EXAMPLE)
    video = root / "talk.mp4"
    write_video(video, frames[12:12 + FRAMES])
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), root / "syncnet_v2.model")   # stand-in weights, the published keys
    return assets, video, root / "syncnet_v2.model"


def _cfg(assets, video, out, *extra):
    return compose_cfg(generation_overrides(assets, [
        f"generate.video_path={video}", f"generate.save_dir={out}", "generate.text=she sells sea shells",
        "generate.min_seconds=0.4", "prep.track=longest", "generate.save_mouth_video=false", *extra]))


def test_report_and_demo_show_each_segments_scores(setup, tmp_path):
    from dataloaders.mfcc import read_wav_int16
    from dataloaders.prep.syncnet_crop import syncnet_crops_from_video
    from pipelines.demo import Demo, stats_markdown
    from pipelines.sync_scores import build_sync_scorer

    assets, video, weights = setup
    demo = Demo(_cfg(assets, video, tmp_path, f"syncnet.ckpt={weights}"))
    try:
        result = demo.run(video, text="she sells sea shells")
        report = json.loads(result["report"].read_text())
        generated = [g for g in report["segments"] if g["status"] == "generated"]
        assert len(generated) == 1
        s = generated[0]["sync"]
        assert set(s) == {"lse_c", "lse_d", "offset", "windows"} and s["windows"] == FRAMES - 5
        assert math.isfinite(s["lse_c"]) and s["lse_d"] > 0 and abs(s["offset"]) <= 15
        lse = report["lse"]
        assert lse["syncnet"] == str(weights) and lse["segments_scored"] == 1 and lse["mean_lse_c"] == s["lse_c"]
        # the numbers are the scorer's on the segment's face crops and the soundtrack as written
        crops = syncnet_crops_from_video(video, demo.cfg)
        assert crops.first == 0 and len(crops.crops) == FRAMES
        direct = build_sync_scorer(demo.cfg, "cpu").score(crops.crops, read_wav_int16(result["wav"]))
        assert s["lse_c"] == pytest.approx(direct.lse_c, abs=2e-3) and s["lse_d"] == pytest.approx(direct.lse_d, abs=2e-3)
        md = stats_markdown(result)
        assert "| LSE-C / LSE-D |" in md.splitlines()[2] and f"{s['lse_c']:.2f} / {s['lse_d']:.2f}" in md
        assert "higher LSE-C and lower LSE-D = more in sync" in md
    finally:
        demo.close()


def test_missing_weights(setup, tmp_path):
    from pipelines.video_to_speech import generate_for_video

    assets, video, _ = setup
    missing = tmp_path / "none.model"
    with pytest.raises(LipVoicerError) as e:   # required: refused before any sampling
        generate_for_video(_cfg(assets, video, tmp_path / "a", f"syncnet.ckpt={missing}", "syncnet.video_report=true"))
    assert str(e.value) == f"{missing}: checkpoint not found; fetch it with: python download_checkpoints.py --only syncnet_v2"
    assert not (tmp_path / "a" / "talk").exists()
    # auto (the default): no scorer, so the report is left as it is (every other inference test runs this way)
    from pipelines.segment_sync import add_segment_sync, prepare_segment_sync

    assert prepare_segment_sync(_cfg(assets, video, tmp_path / "b", f"syncnet.ckpt={missing}"), "cpu") is None
    report = {"segments": [{"status": "generated"}]}
    add_segment_sync(report, None, video, None, np.zeros(0, np.float32))
    assert report == {"segments": [{"status": "generated"}]}
    with pytest.raises(LipVoicerError, match=r"^syncnet.video_report=maybe: use auto"):
        generate_for_video(_cfg(assets, video, tmp_path / "c", "syncnet.video_report=maybe"))
