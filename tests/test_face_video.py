"""The two streamed passes over a video (dataloaders/prep/mouthcrops.py analyse_video): detection
statistics recorded and checked, a face-centred identity image, the boxes data preparation stores,
and the inference job's handling of them (JSON, refusals before sampling, speech kept when the final
mux fails). Clips are built from the synthetic corpus's face (dataloaders/synthetic/scenes.py)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from dataloaders.synthetic.scenes import blank_out, loop, place, synthetic_face_frames
from tests.helpers import compose_cfg, write_video
from tests.tiny_generation import generation_overrides, make_tiny_assets, mean_face_source
from utils.errors import LipVoicerError

TEXT = "place blue at f two now"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return loop(synthetic_face_frames(tmp_path_factory.mktemp("face")), 75)


def _prep(**extra):
    return {"mean_face_path": str(mean_face_source()), "detector": "mediapipe", "min_face_fraction": 0.6,
            "max_gap_frames": 15, "max_mouth_upscale": 2.5, **extra}


def _clip(tmp_path, name, frames):
    path = tmp_path / f"{name}.mp4"
    write_video(path, frames)
    return path


def test_statistics_of_a_clean_clip(faces, tmp_path):
    from dataloaders.prep.mouthcrops import analyse_video

    result = analyse_video(_clip(tmp_path, "clean", faces), _prep(), identity_size=224)
    s = result.stats
    assert s["frames"] == 75 and s["frames_with_face"] == 75 and s["face_fraction"] == 1.0
    assert s["longest_gap_frames"] == 0 and s["longest_gap_start_frame"] is None
    assert s["tracks"]["frames_in_chosen"] == 75 and s["detector"] == "mediapipe"
    assert result.crops.shape == (75, 96, 96) and result.boxes.shape == (75, 4)
    assert result.identity.shape == (224, 224, 3) and 0 <= result.identity_frame < 75
    json.dumps(s)  # JSON-able as it is


def test_too_few_frames_with_a_face_is_refused(faces, tmp_path):
    from dataloaders.prep.mouthcrops import analyse_video

    path = _clip(tmp_path, "rare", blank_out(faces, 20, 75))  # face in 20 of 75 frames
    with pytest.raises(LipVoicerError) as e:
        analyse_video(path, _prep())
    msg = str(e.value)
    assert msg.startswith(f"{path}: a face is found in only 20 of 75 frames (27 %), below prep.min_face_fraction=0.6")
    assert "\n" not in msg
    result = analyse_video(path, _prep(min_face_fraction=0.2, max_gap_frames=None))  # the limit lowered: accepted
    assert result.stats["frames_with_face"] == 20 and result.stats["longest_gap_frames"] == 55


def test_a_long_gap_is_refused(faces, tmp_path):
    from dataloaders.prep.mouthcrops import analyse_video

    path = _clip(tmp_path, "gap", blank_out(faces, 55, 75))  # the face leaves for the last 20 frames (73 % with it)
    with pytest.raises(LipVoicerError) as e:
        analyse_video(path, _prep())
    assert str(e.value).startswith(f"{path}: the face is lost for 20 frames in a row (frames 55-74, 0.80 s), more "
                                   f"than prep.max_gap_frames=15")
    stats = analyse_video(path, _prep(max_gap_frames=20)).stats
    assert stats["longest_gap_frames"] == 20 and stats["longest_gap_start_frame"] == 55
    # a gap in the middle longer than tracking bridges (prep.track_max_gap) splits the face into two tracks:
    # one of them is cropped (never a mix), and the fraction check sees it: by default the one whose mouth moves
    # more (frames 50-74 here), with prep.track=longest the longer one
    split = _clip(tmp_path, "split", blank_out(faces, 30, 50))
    with pytest.raises(LipVoicerError, match=r"a face is found in only 25 of 75 frames \(33 %\)"):
        analyse_video(split, _prep())
    with pytest.raises(LipVoicerError, match=r"a face is found in only 30 of 75 frames \(40 %\)"):
        analyse_video(split, _prep(track="longest"))


def test_identity_image_is_centred_on_the_face_of_a_wide_shot(faces, tmp_path):
    from dataloaders.prep.face_detection import make_detector
    from dataloaders.prep.mouthcrops import analyse_video

    wide = place(faces, (360, 640), 200, (470, 230))  # face off-centre in a 640 x 360 frame
    result = analyse_video(_clip(tmp_path, "wide", wide), _prep(), identity_size=224)
    det = make_detector(_prep())
    found = det.detect_frame(result.identity)
    assert len(found) == 1
    box = found[0].box
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    assert abs(centre[0] - 112) < 15 and abs(centre[1] - 112) < 15, box
    # the whole-frame centre square (what MelGen got before) has the face near its edge
    old = det.detect_frame(np.ascontiguousarray(wide[0][:, 140:500]))
    assert old and abs((old[0].box[0] + old[0].box[2]) / 2 - 180) > 100


def test_small_face_warns_about_magnified_crops(faces, tmp_path, caplog):
    from dataloaders.prep.mouthcrops import analyse_video

    path = _clip(tmp_path, "small", place(faces, (360, 640), 96, (320, 180)))
    with caplog.at_level(logging.WARNING):
        result = analyse_video(path, _prep(min_face_fraction=0.0, max_gap_frames=None))
    assert result.stats["mouth_upscale"] > 2.5
    assert any(r.getMessage().startswith(f"{path}: the face is small (about ") and "magnified" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_data_preparation_stores_the_face_track_and_datasets_use_it(faces, tmp_path):
    from dataloaders.layout import ClipPaths
    from dataloaders.lrs_dataset import identity_image, load_face_track
    from dataloaders.prep.mouthcrops import analyse_video, save_face_video

    video = _clip(tmp_path, "wide", place(faces, (360, 640), 200, (470, 230)))
    result = analyse_video(video, _prep())
    npz = tmp_path / "wide.npz"
    save_face_video(npz, result)
    boxes, frame = load_face_track(npz)
    assert np.allclose(boxes, result.boxes) and frame == result.identity_frame
    with np.load(npz) as z:
        assert json.loads(str(z["detection"]))["frames"] == 75
    clip = type("C", (), {"video": video})()
    img = identity_image(clip, frame, boxes)
    expected = result.stats["median_face_px"] * 224 / 157  # LRS3's framing: a 157 px face in a 224 px frame
    assert img.shape[0] == img.shape[1] and abs(img.shape[0] - expected) < 0.2 * expected
    assert identity_image(clip, frame, None).shape == (360, 640, 3)  # crops made before boxes were stored
    bad = tmp_path / "bad.npz"
    np.savez(bad, data=result.crops, face_boxes=np.zeros((3, 5)))
    with pytest.raises(LipVoicerError, match=r"bad.npz: face_boxes must be a finite \(T, 4\) array, got \(3, 5\)"):
        load_face_track(bad)
    assert ClipPaths  # the layout the datasets read


# ----------------------------------------------------------------------------- the inference job
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_tiny_assets(tmp_path_factory.mktemp("assets"))


def _cfg(assets, video, out, *extra):
    return compose_cfg(generation_overrides(assets, [f"generate.video_path={video}", f"generate.save_dir={out}",
                                                     f"generate.text={TEXT}", "generate.progress=false", *extra]))


def test_inference_json_carries_detection_statistics_and_identity(faces, assets, tmp_path):
    from pipelines.video_to_speech import generate_for_video

    video = _clip(tmp_path, "wide", place(faces, (360, 640), 200, (470, 230)))
    out = generate_for_video(_cfg(assets, video, tmp_path / "o"))
    report = json.loads((out / "wide.json").read_text())
    det = report["face_detection"]
    assert det["frames"] == 75 and det["face_fraction"] == 1.0 and det["shots"] == [[0, 75]]
    assert len(det["tracks"]) == 1 and det["tracks"][0]["frames"] == 75 and 0 <= det["tracks"][0]["identity_frame"] < 75
    assert [(g["start_s"], g["end_s"], g["status"], g["face_fraction"]) for g in report["segments"]] == [
        (0.0, 3.0, "generated", 1.0)]
    assert report["files"]["face"] == "wide_face.png" and (out / "wide_face.png").is_file()
    assert report["output_video"]["error"] is None


def test_inference_refuses_a_rare_face_before_loading_models(faces, assets, tmp_path, monkeypatch):
    import pipelines.video_to_speech as v2s

    def no_models(*a, **k):
        raise AssertionError("models loaded for a refused video")

    monkeypatch.setattr(v2s.GenerationCore, "load", no_models)
    video = _clip(tmp_path, "rare", blank_out(faces, 20, 75))  # a face for 0.8 s, then none: nothing to generate
    with pytest.raises(LipVoicerError) as e:
        v2s.generate_for_video(_cfg(assets, video, tmp_path / "o"))
    assert str(e.value) == (f"{video}: the face is on screen for 0.80 s, less than generate.min_seconds=1 (frames "
                            f"0-19; the rest of the video has no face; nothing to generate: lower the limit, or use "
                            f"another video)")
    with pytest.raises(LipVoicerError, match=r"generate.min_face_fraction=1.5: must be a fraction of frames between "
                                             r"0 and 1"):
        v2s.generate_for_video(_cfg(assets, video, tmp_path / "o", "generate.min_face_fraction=1.5"))
    assert not (tmp_path / "o" / "rare").exists()


def test_speech_is_kept_when_the_final_mux_fails(faces, assets, tmp_path, monkeypatch):
    import pipelines.video_to_speech as v2s

    def broken_mux(video_path, *a, **k):
        raise LipVoicerError(f"{video_path}: cannot write the output video (stand-in failure)")

    monkeypatch.setattr(v2s, "mux_audio", broken_mux)
    video = _clip(tmp_path, "clip", faces)
    with pytest.raises(LipVoicerError) as e:
        v2s.generate_for_video(_cfg(assets, video, tmp_path / "o"))
    out = tmp_path / "o" / "clip"
    assert str(e.value) == (f"{video}: cannot write the output video (stand-in failure); the generated speech is kept: "
                            f"{out / 'clip.wav'} (and its mel), without clip.mp4")
    assert (out / "clip.wav").is_file() and (out / "clip.wav.spec").is_file() and not (out / "clip.mp4").exists()
    report = json.loads((out / "clip.json").read_text())
    assert report["output_video"]["error"].endswith("(stand-in failure)") and "video" not in report["files"]


def test_phone_video_with_rotation_metadata_is_cropped_upright(faces, tmp_path):
    """A phone stores its frames sideways with a display rotation: decoded upright (the frames' shape is the
    displayed one), the face is found in every frame, and the crops match those of the upright clip."""
    import shutil
    import subprocess

    from dataloaders.prep.mouthcrops import analyse_video

    if not shutil.which("ffmpeg"):
        pytest.skip("the ffmpeg command is needed to write rotation metadata")
    sideways = np.ascontiguousarray(np.rot90(faces[:30], -1, axes=(1, 2)))  # stored turned clockwise
    stored = _clip(tmp_path, "stored", sideways)
    phone = tmp_path / "phone.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(stored), "-c", "copy", "-metadata:s:v", "rotate=90",
                    str(phone)], check=True)
    result = analyse_video(phone, _prep(), identity_size=224)
    upright = analyse_video(_clip(tmp_path, "upright", faces[:30]), _prep())
    assert result.stats["face_fraction"] == 1.0
    diff = np.abs(result.crops.astype(int) - upright.crops.astype(int))
    assert np.median(diff) <= 3, np.median(diff)  # the same crops, up to the two encodings
    # the identity image is upright too (the crops alone would not show it: the alignment turns a sideways face)
    from dataloaders.prep.face_detection import make_detector

    kp = make_detector(_prep()).detect_frame(result.identity)[0].keypoints  # right eye, left eye, nose, mouth
    eyes_y, mouth_y = (kp[0, 1] + kp[1, 1]) / 2, kp[3, 1]
    assert mouth_y - eyes_y > 20 and abs(kp[1, 0] - kp[0, 0]) > abs(kp[1, 1] - kp[0, 1]), kp


def test_streamed_passes_show_bars_with_frame_rates(faces, tmp_path, capsys):
    from dataloaders.prep.mouthcrops import analyse_video

    path = _clip(tmp_path, "clip", faces[:30])
    analyse_video(path, _prep(), progress=True)
    err = capsys.readouterr().err.replace("\r", "\n").splitlines()
    for stage in ("decode", "face detection", "mouth cropping"):
        line = [x for x in err if x.startswith(stage)]
        assert line and "30/30" in line[-1] and "frame/s" in line[-1], (stage, err)
    analyse_video(path, _prep(), progress=False)
    assert capsys.readouterr().err == ""


def test_bad_tracking_setting_stops_before_detection(faces, tmp_path, monkeypatch):
    import dataloaders.prep.mouthcrops as mouthcrops

    def no_detection(*a, **k):
        raise AssertionError("face detection ran with a bad prep.track setting")

    monkeypatch.setattr(mouthcrops, "_detector", no_detection)
    with pytest.raises(LipVoicerError, match=r"^prep.track: unknown rule 'tallest' \(use speaking \| longest \| largest \| frontal \| all\)"):
        mouthcrops.analyse_video(_clip(tmp_path, "clip", faces[:30]), _prep(track="tallest"))
