"""Speech for a silent video with talking faces (the work behind inference_real_video.py and the web demo).

    cfg = compose(...)                           # the project's Hydra config
    out_dir = generate_for_video(cfg)            # <save_dir>/<video name>/

Stages: the video streamed at 25 fps and cut into speech segments (shots, the speaking face of
each, long stretches cut at pauses; then each segment's mouth crops and each face's identity
image: dataloaders/prep/video_segments.py) -> a text per segment (given, subtitles, or read from
the lips: pipelines/segment_texts.py) -> who is who across shots (pipelines/speaker.py) -> guided
sampling of every segment's mel, in batches of similar length -> HiFi-GAN -> one soundtrack as
long as the video, silence where nothing is generated (pipelines/soundtrack.py) -> outputs.
A segment that cannot be generated is silent and listed with its reason in the report; the run
fails only when no segment can be generated.
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
import math
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
from tqdm import tqdm

from dataloaders.batching import length_batches
from dataloaders.prep.dlib_faces import DLIB_INSTALL, dlib_available
from dataloaders.prep.face_tracking import tracking_settings
from dataloaders.prep.segments import SegmentSettings
from dataloaders.prep.video_segments import SegmentedVideo, analyse_segments
from dataloaders.text import normalize_text
from dataloaders.transforms import face_to_tensor, mouth_to_tensor
from dataloaders.video_io.encode import write_video
from dataloaders.video_io.mux import mux_audio, mux_plan
from dataloaders.video_io.probe import probe_video
from models.vsr.reader import load_lip_reader
from pipelines.generation import GenerationCore, clip_generator, generation_files
from pipelines.segment_sync import add_segment_sync, prepare_segment_sync
from pipelines.segment_texts import apply_texts, needs_lip_reading, text_plan
from pipelines.settings import check_generation_settings
from pipelines.soundtrack import Piece, assemble
from pipelines.speaker import assign_speakers
from utils.distributed import resolve_device
from utils.errors import LipVoicerError
from utils.files import OutputError, check_writable, output_error, publish_dir
from models.model_sets import model_set_name, notice, resolve_model_set
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
                             f"(generate.max_seconds, a guard against mistakes: raise it for a longer video)")


# ----------------------------------------------------------------------------- segments
def segment_settings(cfg) -> SegmentSettings:
    """The segment rules from generate.* and prep.track* (validated by check_generation_settings and
    tracking_settings)."""
    gen, fps = cfg["generate"], float(cfg["video"]["fps"])
    track = tracking_settings(cfg["prep"])
    return SegmentSettings(
        min_frames=int(round(float(gen["min_seconds"]) * fps)),
        max_frames=max(int(round(float(gen["segment_seconds"]) * fps)), 1),
        min_face_fraction=float(gen["min_face_fraction"]),
        max_gap_frames=None if gen["max_gap_frames"] is None else int(gen["max_gap_frames"]),
        rule=track["rule"], index=track["index"], min_iou=track["min_iou"],
        max_keypoint_distance=track["max_keypoint_distance"], max_gap=track["max_gap"],
        overlap_frames=crossfade_frames(gen, fps), fps=fps,
        min_human_fraction=float(gen["min_human_fraction"]) if face_checks(gen) else 0.0,
        min_lip_activity=float(gen["min_lip_activity"]) if face_checks(gen) else 0.0)


def face_checks(gen) -> bool:
    """generate.face_checks: dlib's human-face, lip-activity and identity checks (dataloaders/prep/dlib_faces.py)."""
    return bool(gen.get("face_checks", True))


def crossfade_frames(gen, fps: float) -> int:
    """generate.crossfade_seconds in whole video frames (0: none)."""
    return int(round(float(gen.get("crossfade_seconds", 0.0) or 0.0) * fps))


def no_speech_error(video: SegmentedVideo, source: str, fps: float) -> LipVoicerError:
    """One line saying why no segment of the video can be generated: a single face stretch's own reason (the
    message of a one-shot clip), else how many stretches were refused and the longest one's reason."""
    faces = [g for g in video.segments if g.track is not None]
    if not faces:
        return LipVoicerError(f"{source}: no speaking face in any shot ({len(video.shots)} shots)")
    longest = max(faces, key=lambda g: g.frames)
    if len(faces) == 1:
        return LipVoicerError(f"{source}: {longest.reason} (frames {longest.start}-{longest.stop - 1}"
                              f"{'' if longest.frames == video.frames else '; the rest of the video has no face'}"
                              f"; nothing to generate: lower the limit, or use another video)")
    return LipVoicerError(f"{source}: none of the {len(faces)} face segments can be generated; the longest "
                          f"({longest.start / fps:.2f}-{longest.stop / fps:.2f} s): {longest.reason}")


def read_texts(cfg, video: SegmentedVideo, device: torch.device, source: str) -> None:
    """The lip reader's text for every generated segment (loaded once, released before sampling)."""
    todo = video.generated
    if not todo:
        return
    reader = load_lip_reader(cfg, device=device)
    try:
        for i in todo:
            g = video.segments[i]
            crops = video.crops[i][:g.frames]
            g.text = normalize_text(reader.read(crops, device=device, source=f"{source} {g.start}-{g.stop}"))
    finally:
        del reader  # about 1 GB on a GPU: give it back before sampling
        if device.type == "cuda":
            torch.cuda.empty_cache()


def speakers_of(video: SegmentedVideo, threshold: float) -> dict[int, int]:
    """{track: speaker} for the tracks with speech (pipelines/speaker.py), set on every segment of them."""
    faces = {}  # the tracks that still have speech (subtitles may have silenced some): their first shot, descriptor
    for i in video.generated:
        g = video.segments[i]
        faces.setdefault(g.track, (g.shot, (video.descriptors or {}).get(g.track)))
    speakers = assign_speakers(faces, threshold)
    for g in video.segments:
        g.speaker = speakers.get(g.track) if g.track is not None else None
    return speakers


def speech_for_segments(core: GenerationCore, cfg, items: list[dict], device: torch.device, seed: int,
                        progress: bool = False, on_fraction=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Mel and audio of each item ({"id", "crops": uint8 (T, 96, 96), "face": RGB identity, "text"}), sampled in
    batches of generate.batch_size items of similar length (length buckets on CUDA: GenerationCore). Each
    item's noise comes from its own generator (clip_generator(seed, id)), so an item gets the same noise
    whatever it is batched with. on_fraction(f): after each sampling step, f = fraction of all steps."""
    batch_size = max(int(cfg["generate"]["batch_size"]), 1)
    batches = length_batches({k: len(it["crops"]) for k, it in enumerate(items)}, batch_size)
    n_steps = core.sampler.steps if core.sampler.name != "ancestral" else core.sampler.schedule.T
    out: list = [None] * len(items)
    per_frame = core.melgen.upsample_factor
    with tqdm(total=len(items), desc="segments", unit="segment", dynamic_ncols=True, disable=not progress) as bar:
        for b, batch in enumerate(batches):
            mouths = [mouth_to_tensor(items[k]["crops"], cfg["video"], train=False) for k in batch]
            frames = torch.tensor([m.shape[1] for m in mouths])
            mouth = torch.zeros(len(batch), 1, int(frames.max()), *mouths[0].shape[-2:])
            for j, m in enumerate(mouths):
                mouth[j, :, :m.shape[1]] = m
            face = torch.stack([face_to_tensor(items[k]["face"], cfg["video"], train=False) for k in batch])
            ids = [items[k]["id"] for k in batch]
            callback = None if on_fraction is None else (
                lambda i, t, x, b=b: on_fraction(min(1.0, (b + (i + 1) / n_steps) / len(batches))))
            mels, audio = core.generate(mouth.to(device), face.to(device), frames * per_frame,
                                        [items[k]["text"] for k in batch], ids=ids,
                                        generators=[clip_generator(seed, i, device) for i in ids],
                                        progress=progress and len(batches) == 1, callback=callback)
            samples = audio.shape[-1] // mels.shape[-1]
            for j, k in enumerate(batch):
                n = int(frames[j]) * per_frame
                out[k] = (mels[j, :, :n].cpu(), audio[j, :n * samples].cpu())
            bar.update(len(batch))
    return out


def soundtrack(video: SegmentedVideo, speech: dict[int, tuple[torch.Tensor, torch.Tensor]], n_samples: int,
               samples_per_frame: int, fade_frames: int) -> np.ndarray:
    """The video's one soundtrack (pipelines/soundtrack.py) from the speech of its generated segments."""
    starts = {(video.segments[i].start, video.segments[i].track) for i in speech}
    pieces = []
    for i, (_, audio) in speech.items():
        g = video.segments[i]
        extend = g.extend if (g.stop, g.track) in starts else 0   # the next piece silenced (subtitles): no overlap
        pieces.append(Piece(g.start * samples_per_frame,
                            audio.numpy().astype(np.float32)[:(g.frames + extend) * samples_per_frame],
                            extend * samples_per_frame))
    return assemble(n_samples, pieces, fade_frames * samples_per_frame)


def full_mel(video: SegmentedVideo, speech: dict, n_mels: int, per_frame: int, clamp_min: float) -> torch.Tensor:
    """(n_mels, per_frame * frames) log-mel of the whole video: silence (log clamp_min) outside speech."""
    mel = torch.full((n_mels, video.frames * per_frame), math.log(clamp_min))
    for i, (m, _) in speech.items():
        g = video.segments[i]
        mel[:, g.start * per_frame:g.stop * per_frame] = m[:, :g.frames * per_frame]
    return mel


def mouth_frames(video: SegmentedVideo):
    """The mouth crops of the whole video, one frame at a time (black where no segment is generated)."""
    blank = np.zeros(next(iter(video.crops.values())).shape[1:], np.uint8)
    starts = {video.segments[i].start: i for i in video.generated}
    t = 0
    while t < video.frames:
        i = starts.get(t)
        if i is None:
            yield blank
            t += 1
            continue
        g = video.segments[i]
        yield from video.crops[i][:g.frames]
        t = g.stop


# ----------------------------------------------------------------------------- outputs
def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    sf.write(str(path), audio, sr, subtype="PCM_16", format="WAV")


def write_outputs(tmp_dir: Path, name: str, *, video_path: Path, video: SegmentedVideo, mel: torch.Tensor,
                  audio: np.ndarray, sr: int, faces: dict[int, np.ndarray], fps: float, timer: StageTimer,
                  save_mouth_video: bool, plan=None) -> tuple[dict[str, str], str | None]:
    """Every output file of one video into tmp_dir: ({kind: file name}, why the .mp4 with the new speech
    could not be written or None). The speech files come first and stay when the mux fails. faces:
    {speaker: identity image}: <name>_face.png for speaker 0, <name>_face_<k>.png for the others."""
    texts = [video.segments[i].text for i in video.generated]
    files = {"wav": f"{name}.wav", "mel": f"{name}.wav.spec", "mel_png": f"{name}.png", "text": f"{name}.txt"}
    with timer("write_audio"):
        _write_wav(tmp_dir / files["wav"], audio, sr)
        torch.save(mel.clone(), tmp_dir / files["mel"])
        (tmp_dir / files["text"]).write_text("".join(t + "\n" for t in texts))
    with timer("write_figures"):
        save_mel_png(mel.numpy(), tmp_dir / files["mel_png"], title=" / ".join(t for t in texts if t) or None)
        for k, image in sorted(faces.items()):
            key = "face" if k == 0 else f"face_{k}"
            files[key] = f"{name}_{key}.png"
            save_image_png(image, tmp_dir / files[key])
    mux_error = None
    with timer("write_videos"):
        if save_mouth_video and video.generated:
            files["mouth_video"] = f"{name}_mouth.mp4"
            write_video(tmp_dir / files["mouth_video"], mouth_frames(video), fps=fps)
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
    stage starts (fraction 0) and after each sampling step (fraction of all the steps done); name is one
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
    source = str(video_path)
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
    settings = segment_settings(cfg)  # a bad prep.track* value stops here
    if face_checks(gen) and not dlib_available():
        raise LipVoicerError(f"{DLIB_INSTALL}, or set generate.face_checks=false")
    texts = text_plan(cfg)            # a bad subtitle file stops here
    generation_files(cfg, lip_reading=needs_lip_reading(texts))
    sync = prepare_segment_sync(cfg, device)  # LSE-C / LSE-D per segment (syncnet.video_report): weights checked now
    model_set = resolve_model_set(cfg)   # checked by generation_files; its one-line notice now
    if model_set is not None:
        log.warning("%s", notice(model_set))
    prep = dict(cfg["prep"])   # after the set's folder is made absolute (its mean face, from any working folder)
    check_video_length(video_path, gen)
    stage("read_video", 0.0)
    stage("mouth_crops", 0.0)
    with timer("mouth_crops"):  # decoding stops at generate.max_seconds when the header gives no duration (raw .h264)
        video = analyse_segments(video_path, prep, settings, identity_size=int(cfg["video"]["face_size"]),
                                 shot_threshold=float(gen["shot_threshold"]), min_shot_frames=int(gen["min_shot_frames"]),
                                 max_seconds=float(gen["max_seconds"]), limit_name="generate.max_seconds",
                                 progress=progress, face_checks=face_checks(gen))
    if not video.generated:
        raise no_speech_error(video, source, fps)
    apply_texts(texts, video.segments, fps, source)
    if not video.generated:
        raise LipVoicerError(f"{source}: no cue of {texts.file} falls into any of the video's face segments "
                             f"(are they the subtitles of this video?)")
    plan = output_video_plan(video_path, save_dir / f"{name}.mp4")  # how the speech goes into the video, now
    log.info("%d frames, %d shots, %d face tracks; %d segments with speech, %d silent", video.frames,
             len(video.shots), len(video.tracks), len(video.generated), len(video.segments) - len(video.generated))
    for g in video.segments:
        if not g.generated and g.track is not None:
            log.warning("%s: %.2f-%.2f s stays silent: %s", source, g.start / fps, g.stop / fps, g.reason)
    stage("text", 0.0)
    with timer("text"):
        if needs_lip_reading(texts):
            read_texts(cfg, video, device, source)
    speakers = speakers_of(video, float(gen["same_speaker_distance"]))
    faces = {}  # speaker -> identity image: the one of its first track
    for tid in sorted(speakers):
        faces.setdefault(speakers[tid], video.identities[tid])
    if core is None:
        stage("load_models", 0.0)
        with timer("load_models"):
            core = GenerationCore.load(cfg, device)
    seed = int(gen["seed"])
    items = [{"id": f"segment {g.start}-{g.stop} track {g.track}", "crops": video.crops[i], "text": g.text,
              "face": faces[g.speaker]} for i in video.generated for g in [video.segments[i]]]
    stage("sampling", 0.0)
    with timer("sampling"):
        results = speech_for_segments(core, cfg, items, device, seed, progress,
                                      on_fraction=None if on_stage is None else lambda f: stage("sampling", f))
    stage("write_outputs", 0.0)
    speech = dict(zip(video.generated, results))
    sr = int(cfg["audio"]["sampling_rate"])
    per_frame = core.melgen.upsample_factor
    samples_per_frame = int(round(sr / fps))
    audio_np = soundtrack(video, speech, video.frames * samples_per_frame, samples_per_frame,
                          crossfade_frames(gen, fps))
    mel = full_mel(video, speech, int(cfg["audio"]["n_mels"]), per_frame, float(cfg["audio"]["clamp_min"]))

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=save_dir))
    try:
        files, mux_error = write_outputs(tmp_dir, name, video_path=video_path, video=video, mel=mel, audio=audio_np,
                                         sr=sr, faces=faces, fps=fps, timer=timer,
                                         save_mouth_video=bool(gen.get("save_mouth_video", True)), plan=plan)
        spoken = [video.segments[i] for i in video.generated]
        report = {
            "video": str(video_path.resolve()),
            "frames_25fps": int(video.frames),
            "seconds": round(video.frames / fps, 3),
            "audio_seconds": round(len(audio_np) / sr, 3),
            "text": " ".join(g.text for g in spoken if g.text),
            "text_source": ", ".join(sorted({g.text_source for g in spoken})),
            "segments": [g.report(fps) for g in video.segments],
            "speakers": [{"speaker": k, "tracks": sorted(t for t, s in speakers.items() if s == k),
                          "identity_image": files["face" if k == 0 else f"face_{k}"]} for k in sorted(faces)],
            "face_detection": video.stats,
            "output_video": {"error": mux_error, **({} if plan is None else {
                "copy_video": plan.copy_video, "video_codec": plan.video_codec, "out_codec": plan.out_codec,
                "rotation": plan.rotation, "plan": plan.reason})},
            "device": str(device),
            "settings": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                         for k, v in dict(gen).items()},
            "checkpoints": core.files,
            "model_set": model_set_name(cfg),
            "timings_s": dict(timer.seconds),
            "versions": versions(),
            "files": files,
            "command": " ".join(sys.argv),
        }
        add_segment_sync(report, sync, video_path, video, audio_np, fps, float(gen["max_seconds"]))
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
