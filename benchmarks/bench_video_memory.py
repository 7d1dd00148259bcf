"""Peak memory of reading a long high-resolution clip for mouth crops, each mode in a fresh process:

    segments   what inference_real_video.py does: the streamed passes that cut the video into speech
               segments and keep each segment's mouth crops (dataloaders/prep/video_segments.py);
    streamed   one clip, one face (data preparation: dataloaders/prep/mouthcrops.py analyse_video);
    in_memory  holding every frame (what both did before they streamed).

    python benchmarks/bench_video_memory.py --seconds 600 --height 720 --modes segments   # 10 minutes of 720p
    python benchmarks/bench_video_memory.py --seconds 60 --height 1080
    python benchmarks/bench_video_memory.py --seconds 4 --height 360        # a quick look

The clip is the synthetic corpus's talking face placed in a larger frame, looped to the length asked
for, encoded once to H.264 in a work folder (kept, so a re-run skips it). Prints one line per
mode: peak resident memory (VmHWM of the child process: unlike ru_maxrss it does not carry over
the parent's peak through exec) and wall time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from dataloaders.prep.mouthcrops import analyse_video, mouth_crops_from_frames, video_frames
cfg = {{"mean_face_path": {mean_face!r}, "detector": "mediapipe", "min_face_fraction": 0.5, "max_gap_frames": None}}
t = time.perf_counter()
if {mode!r} == "segments":
    from dataloaders.prep.segments import SegmentSettings
    from dataloaders.prep.video_segments import analyse_segments
    video = analyse_segments({video!r}, cfg, SegmentSettings(min_frames=25, max_frames=250, min_face_fraction=0.6,
                             max_gap_frames=15), identity_size=224)
    crops = [0] * sum(len(c) for c in video.crops.values())
elif {mode!r} == "streamed":
    crops = analyse_video({video!r}, cfg, identity_size=224).crops
else:
    crops = mouth_crops_from_frames(video_frames({video!r}, cfg), cfg)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({{"frames": len(crops), "seconds": time.perf_counter() - t, "peak_rss_mb": int(hwm.split()[1]) / 1024}}))
"""


def make_clip(path: Path, seconds: float, height: int) -> None:
    from dataloaders.video_io.encode import write_video
    from dataloaders.synthetic.scenes import loop, place, synthetic_face_frames

    faces = synthetic_face_frames(path.parent / "corpus")
    width = height * 16 // 9 // 2 * 2
    n = int(round(seconds * 25))
    size = height // 2
    chunk = place(loop(faces, 250), (height, width), size, (width // 2, height // 2))
    write_video(path, (chunk[i % len(chunk)] for i in range(n)), fps=25, crf=28, threads=0)  # streamed to the encoder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--work_dir", type=Path, default=Path(tempfile.gettempdir()) / "lipvoicer_bench_memory")
    ap.add_argument("--mean_face", type=Path, default=ROOT / "checkpoints" / "20words_mean_face.npy",
                    help="68-point mean face (python download_checkpoints.py fetches it)")
    ap.add_argument("--modes", nargs="+", default=["segments", "streamed", "in_memory"],
                    choices=["segments", "streamed", "in_memory"])
    args = ap.parse_args(argv)
    if not args.mean_face.is_file():
        ap.error(f"{args.mean_face}: mean face not found (python download_checkpoints.py, or --mean_face)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    video = args.work_dir / f"face_{args.height}p_{args.seconds:g}s.mp4"
    if not video.is_file():
        t = time.perf_counter()
        make_clip(video, args.seconds, args.height)
        print(f"made {video} in {time.perf_counter() - t:.0f} s", flush=True)
    results = {}
    for mode in args.modes:
        code = CHILD.format(root=str(ROOT), mean_face=str(args.mean_face.resolve()), mode=mode, video=str(video))
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{mode}: failed\n{res.stderr[-2000:]}")
            return 1
        results[mode] = json.loads(res.stdout.strip().splitlines()[-1])
        r = results[mode]
        print(f"{mode:10s} {r['frames']} frames of {args.height}p: peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"{r['seconds']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
