"""Speech for one silent talking-face video (the work behind inference_real_video.py).

    cfg = compose(...)                           # the project's Hydra config
    out_dir = generate_for_video(cfg)            # <save_dir>/<video name>/

Stages: the video streamed twice at 25 fps (faces detected and tracked, the chosen face
checked, then mouth crops and a face-centred identity image; dataloaders/prep/mouthcrops.py)
-> text (given, or read from the lips) -> guided sampling of the mel -> HiFi-GAN -> outputs.
How the speech goes back into the video (stream copy or re-encode) is decided before
sampling. Everything is written into a hidden temporary folder beside the final one, which
is renamed into place only when every file is complete, so a failed run leaves nothing under
the final name; when only the final .mp4 cannot be written, the speech (.wav, mel) is kept
and the run ends with one line saying why. Problems a user can fix raise LipVoicerError with
one line naming the file.
"""
from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import soundfile as sf

from dataloaders.prep.mouthcrops import FaceLimits, analyse_video
from dataloaders.text import normalize_text
from dataloaders.transforms import face_to_tensor, mouth_to_tensor
from dataloaders.video_io.mux import mux_audio, mux_plan
from dataloaders.video_io.probe import probe_video
from dataloaders.video_io.encode import write_video
from models.vsr.reader import load_lip_reader
from pipelines.generation import GenerationCore, generation_files
from pipelines.settings import check_generation_settings
from utils.distributed import resolve_device
from utils.errors import LipVoicerError
from utils.files import OutputError, check_writable, output_error, publish_dir
from utils.plotting import save_mel_png

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- small helpers
class StageTimer:
    """Wall-clock seconds per named stage (CUDA work is synchronised before reading the clock)."""

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


def versions() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform()}
    for mod in ("torchaudio", "av", "mediapipe", "cv2"):
        try:
            info[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:  # noqa: BLE001 - optional packages are reported when present
            pass
    try:
        info["lipvoicer_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                                  text=True, timeout=5).stdout.strip() or None
    except Exception:  # noqa: BLE001 - not a git checkout
        info["lipvoicer_commit"] = None
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def check_video_length(path: Path, gen_cfg) -> None:
    """Refuse a video longer than generate.max_seconds before decoding it (from its header; a file
    without a duration in its header, such as a raw .h264 stream, is stopped while decoding)."""
    info = probe_video(path)
    limit = float(gen_cfg["max_seconds"])
    if info["duration"] is not None and info["duration"] > limit:
        raise LipVoicerError(f"{path}: video is {info['duration']:.1f} s long; the limit is {limit:g} s "
                             f"(generate.max_seconds; memory grows with length: cut the video or raise the limit)")


# ----------------------------------------------------------------------------- the computation
def read_text(cfg, crops: np.ndarray, device: torch.device, source: str) -> tuple[str, str]:
    """(text, where it came from): generate.text when given, else the lip reader's reading."""
    given = cfg["generate"].get("text")
    if given is not None and str(given).strip():
        return normalize_text(str(given)), "generate.text"
    reader = load_lip_reader(cfg, device=device)
    try:
        text = reader.read(crops, device=device, source=source)
    finally:
        del reader  # about 1 GB on a GPU: give it back before sampling
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return normalize_text(text), "lip reader"


def speech_from_crops(core: GenerationCore, cfg, crops: np.ndarray, face_frame: np.ndarray, text: str,
                      device: torch.device, generator: torch.Generator | None = None,
                      progress: bool = False, callback=None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 mouth crops (T, 96, 96) + the identity image (RGB, face-centred) + text -> (log-mel (80, 4T),
    16 kHz audio (640 T,)): the generation core on a batch of one."""
    mouth = mouth_to_tensor(crops, cfg["video"], train=False).unsqueeze(0).to(device)
    face = face_to_tensor(face_frame, cfg["video"], train=False).unsqueeze(0).to(device)
    mels, audio = core.generate(mouth, face, None, [text], ids=[str(cfg["generate"]["video_path"])],
                                generator=generator, progress=progress, callback=callback)
    return mels[0].cpu(), audio[0].cpu()


# ----------------------------------------------------------------------------- outputs
def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    sf.write(str(path), audio, sr, subtype="PCM_16", format="WAV")


def write_outputs(tmp_dir: Path, name: str, *, video_path: Path, mel: torch.Tensor, audio: np.ndarray, sr: int,
                  crops: np.ndarray | None, identity: np.ndarray | None, text: str, fps: float, timer: StageTimer,
                  plan=None) -> tuple[dict[str, str], str | None]:
    """Every output file of one video into tmp_dir: ({kind: file name}, why the .mp4 with the new speech
    could not be written or None). The speech files come first and stay when the mux fails."""
    files = {"wav": f"{name}.wav", "mel": f"{name}.wav.spec", "mel_png": f"{name}.png", "text": f"{name}.txt"}
    with timer("write_audio"):
        _write_wav(tmp_dir / files["wav"], audio, sr)
        torch.save(mel.clone(), tmp_dir / files["mel"])
        (tmp_dir / files["text"]).write_text(text + "\n")
    with timer("write_figures"):
        save_mel_png(mel.numpy(), tmp_dir / files["mel_png"], title=text or None)
        if identity is not None:
            files["face"] = f"{name}_face.png"
            save_image_png(identity, tmp_dir / files["face"])
    mux_error = None
    with timer("write_videos"):
        if crops is not None:
            files["mouth_video"] = f"{name}_mouth.mp4"
            write_video(tmp_dir / files["mouth_video"], crops, fps=fps)
        try:
            mux_audio(video_path, audio, sr, tmp_dir / f"{name}.mp4", plan=plan)
            files["video"] = f"{name}.mp4"
        except OutputError:
            raise  # disk full, ...: every output is lost alike; generate_for_video names the output folder
        except LipVoicerError as e:
            mux_error = str(e)
    return files, mux_error


def save_image_png(rgb: np.ndarray, path: Path) -> None:
    import cv2  # noqa: PLC0415 - OpenCV comes with the mouth cropping that made the image

    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"{path}: cannot write the image")


# ----------------------------------------------------------------------------- the job
def output_video_plan(video_path: Path, out_path: Path):
    """How the new speech will go into a copy of the video (stream copy, or re-encoding the video to
    H.264), decided before any sampling; None (with a warning) when no .mp4 can be written, in which case
    the speech files are still written."""
    try:
        plan = mux_plan(video_path, out_path)
    except LipVoicerError as e:
        log.warning("%s; no .mp4 with the new speech will be written (the .wav will)", e)
        return None
    if not plan.copy_video:
        log.info("%s: its video stream (%s) cannot be copied into an .mp4: it will be re-encoded to H.264",
                 video_path, plan.video_codec)
    return plan


def generate_for_video(cfg, core: GenerationCore | None = None, on_stage=None) -> Path:
    """Run the whole job for cfg.generate.video_path; returns the output folder (the models are
    loaded here unless a loaded GenerationCore is passed). on_stage(name, fraction): called as each
    stage starts (fraction 0) and after each sampling step (fraction of the steps done); name is one
    of read_video, mouth_crops, text, load_models, sampling, write_outputs, done."""
    stage = on_stage or (lambda name, fraction: None)
    gen = cfg["generate"]
    check_generation_settings(cfg)  # every setting, before any video is read or model loaded
    if not gen.get("video_path"):
        raise LipVoicerError("no video given: set generate.video_path=<file>")
    video_path = Path(str(gen["video_path"]))
    if not video_path.is_file():
        raise LipVoicerError(f"{video_path}: file not found")
    name = video_path.stem
    save_dir = Path(str(gen["save_dir"]))
    check_writable(save_dir)
    final_dir = save_dir / name

    device = resolve_device(gen["device"])
    if device.type == "cpu":
        log.warning("running on CPU: sampling takes several minutes per second of video at the full model size "
                    "(use a CUDA GPU for real work)")
    timer = StageTimer(device)
    progress = bool(gen.get("progress", True))
    fps = float(cfg["video"]["fps"])
    prep = dict(cfg["prep"])
    prep["min_seconds"] = float(gen["min_seconds"])

    given = gen.get("text")
    generation_files(cfg, lip_reading=given is None or not str(given).strip())
    check_video_length(video_path, gen)
    stage("read_video", 0.0)
    stage("mouth_crops", 0.0)
    limits = FaceLimits(float(gen["min_face_fraction"]), None if gen["max_gap_frames"] is None else
                        int(gen["max_gap_frames"]), prep.get("max_mouth_upscale"), prefix="generate")
    with timer("mouth_crops"):  # decoding stops at generate.max_seconds when the header gives no duration (raw .h264)
        faces = analyse_video(video_path, prep, limits=limits, identity_size=int(cfg["video"]["face_size"]),
                              max_seconds=float(gen["max_seconds"]), limit_name="generate.max_seconds",
                              progress=progress)
    crops = faces.crops
    plan = output_video_plan(video_path, save_dir / f"{name}.mp4")  # how the speech goes into the video, now
    log.info("face found in %d of %d frames (%.0f %%), longest gap %d frames; identity image from frame %d",
             faces.stats["frames_with_face"], faces.stats["frames"], 100 * faces.stats["face_fraction"],
             faces.stats["longest_gap_frames"], faces.identity_frame)
    stage("text", 0.0)
    with timer("text"):
        text, text_source = read_text(cfg, crops, device, str(video_path))
    log.info("text (%s): %s", text_source, text or "<empty>")
    if core is None:
        stage("load_models", 0.0)
        with timer("load_models"):
            core = GenerationCore.load(cfg, device)
    seed = int(gen["seed"])
    generator = torch.Generator(device=device).manual_seed(seed)
    n_steps = core.sampler.steps if core.sampler.name != "ancestral" else core.sampler.schedule.T
    stage("sampling", 0.0)
    with timer("sampling"):
        mel, audio = speech_from_crops(core, cfg, crops, faces.identity, text, device, generator, progress,
                                       callback=None if on_stage is None else
                                       lambda i, t, x: stage("sampling", min(1.0, (i + 1) / n_steps)))
    stage("write_outputs", 0.0)
    audio_np = audio.numpy().astype(np.float32)
    sr = int(cfg["audio"]["sampling_rate"])

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=save_dir))
    try:
        files, mux_error = write_outputs(tmp_dir, name, video_path=video_path, mel=mel, audio=audio_np, sr=sr,
                                         crops=crops if gen.get("save_mouth_video", True) else None,
                                         identity=faces.identity, text=text, fps=fps, timer=timer, plan=plan)
        report = {
            "video": str(video_path.resolve()),
            "frames_25fps": int(len(crops)),
            "seconds": round(len(crops) / fps, 3),
            "audio_seconds": round(len(audio_np) / sr, 3),
            "text": text,
            "text_source": text_source,
            "face_detection": faces.stats,
            "output_video": {"error": mux_error, **({} if plan is None else {
                "copy_video": plan.copy_video, "video_codec": plan.video_codec, "out_codec": plan.out_codec,
                "rotation": plan.rotation, "plan": plan.reason})},
            "device": str(device),
            "settings": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                         for k, v in dict(gen).items()},
            "checkpoints": core.files,
            "timings_s": dict(timer.seconds),
            "versions": versions(),
            "files": files,
            "command": " ".join(sys.argv),
        }
        files["report"] = f"{name}.json"
        (tmp_dir / files["report"]).write_text(json.dumps(report, indent=2) + "\n")
        publish_dir(tmp_dir, final_dir)
    except BaseException as e:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        err = output_error(e, final_dir)  # disk full, ...: one line naming the output, not the input video
        if err is not None:
            raise err from e
        raise
    if mux_error is not None:
        raise LipVoicerError(f"{mux_error}; the generated speech is kept: {final_dir / files['wav']} "
                             f"(and its mel), without {name}.mp4")
    stage("done", 1.0)
    log.info("wrote %s (%s)", final_dir, ", ".join(f"{k} {v:.2f}s" for k, v in timer.seconds.items()))
    return final_dir
