"""The web demo's work (app.py is only its page): one generation core, loaded once and reused,
serves the requests one after another, each in its own temporary folder.

    cfg, why = choose_models(overrides, compose_config)   # published checkpoints, else the synthetic set
    demo = Demo(cfg, DemoLimits(max_upload_mb=50, max_seconds=20), models_note=why)
    result = demo.run("clip.mp4", text="", w_video=2.0, w_asr=1.5, sampler="ancestral", steps=50, seed=0,
                      on_progress=lambda fraction, message: ...)
    ...                                      # show result["video"], result["wav"], ... (files in result["dir"])
    demo.cleanup(result["dir"])              # the request's folder, once the page has its copies
    demo.close()                             # every request folder

Every request goes through pipelines.video_to_speech.generate_for_video, the code path of
inference_real_video.py; its on_stage hook drives the progress. Problems a user can fix raise
LipVoicerError with the same one line as the command line, naming the uploaded file by its name.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from models.builders import build_sampler
from pipelines.generation import GenerationCore, generation_files
from pipelines.settings import check_generation_settings
from pipelines.video_to_speech import generate_for_video
from utils.distributed import resolve_device
from utils.errors import LipVoicerError
from models.model_sets import notice, resolve_model_set

log = logging.getLogger(__name__)

# stage -> (overall fraction when it starts, what the page says)
STAGES = {
    "load_models": (0.0, "loading the models (once)"),
    "read_video": (0.02, "decoding the video"),
    "mouth_crops": (0.06, "face detection and mouth crops"),
    "text": (0.18, "text (given, or lip reading)"),
    "sampling": (0.25, "sampling"),
    "vocoding": (0.90, "vocoding"),
    "write_outputs": (0.93, "writing the outputs"),
    "done": (1.0, "done"),
}


SYNTHETIC = "synthetic"   # the model set shipped in the repository (configs/models/synthetic.yaml)


def choose_models(overrides: list[str], compose) -> tuple[object, str | None]:
    """The demo's config and, when it is not the one asked for, why: the published checkpoints when their
    files are present (or whatever `models=` the overrides name), else the shipped synthetic model set, with
    one line saying so. compose(overrides) -> config."""
    cfg = compose(overrides)
    if any(o.split("=", 1)[0].lstrip("+") == "models" for o in overrides):
        return cfg, None
    try:
        generation_files(cfg)   # MelGen, vocoder, ASR (the lip reader is not needed when the text is typed)
        return cfg, None
    except LipVoicerError as e:
        missing = str(e)
    synthetic = compose([*overrides, f"models={SYNTHETIC}"])
    manifest = resolve_model_set(synthetic)   # a damaged set: its own one line
    line = (f"The published checkpoints are not here ({missing.split(';')[0]}), so this demo runs the "
            f"synthetic-corpus model set: {notice(manifest).split(': ', 1)[-1]}")
    log.warning("%s", line)
    return synthetic, line


@dataclasses.dataclass(frozen=True)
class DemoLimits:
    max_upload_mb: float = 50.0   # larger uploads are refused
    max_seconds: float = 20.0     # longer videos are refused (generate.max_seconds, when that is larger)


class StageProgress:
    """on_stage(name, fraction) of generate_for_video -> on_progress(overall fraction, message), with how much
    of the sampling (all segments' batches together) is done and an ETA."""

    def __init__(self, on_progress, n_steps: int):
        self.on_progress = on_progress
        self.n_steps = n_steps
        self.sampling_start: float | None = None

    def __call__(self, name: str, fraction: float) -> None:
        if self.on_progress is None:
            return
        if name == "sampling":
            start, end = STAGES["sampling"][0], STAGES["vocoding"][0]
            now = time.perf_counter()
            if self.sampling_start is None or fraction == 0:
                self.sampling_start = now
            if fraction >= 1.0:
                self.on_progress(end, STAGES["vocoding"][1])
                return
            eta = ""
            if fraction > 0:
                left = (now - self.sampling_start) / fraction * (1 - fraction)
                eta = f", about {left:.0f} s left"
            self.on_progress(start + (end - start) * fraction, f"sampling: {100 * fraction:.0f} % of the segments' "
                                                               f"{self.n_steps} steps each{eta}")
            return
        start, message = STAGES.get(name, (None, name))
        if start is not None:
            self.on_progress(start, message)


class Demo:
    """The app's state: the configuration, the limits, the generation core (loaded on first use) and
    the folder holding the requests' folders."""

    def __init__(self, cfg, limits: DemoLimits = DemoLimits(), models_note: str | None = None):
        self.cfg = cfg
        self.limits = limits
        self.models_note = models_note   # shown on the page: which model set runs, when not the one asked for
        self.device = resolve_device(cfg["generate"]["device"])
        self.work_root = Path(tempfile.mkdtemp(prefix="lipvoicer-demo-"))
        self._core: GenerationCore | None = None
        self._lock = threading.Lock()  # one request at a time on the one model copy

    # ------------------------------------------------------------------ settings of one request
    def request_cfg(self, video: Path, out_dir: Path, *, text: str | None, w_video: float, w_asr: float,
                    sampler: str, steps: int | None, seed: int):
        cfg = copy.deepcopy(self.cfg)
        limit = min(float(cfg["generate"]["max_seconds"]), float(self.limits.max_seconds))
        values = {"video_path": str(video), "save_dir": str(out_dir), "text": (text or "").strip() or None,
                  "w_video": float(w_video), "w_asr": float(w_asr), "sampler": str(sampler),
                  "steps": int(steps) if steps is not None else cfg["generate"]["steps"],
                  "seed": int(seed) if seed is not None else 0, "max_seconds": limit, "progress": False}
        for key, value in values.items():
            OmegaConf.update(cfg, f"generate.{key}", value, merge=False)
        return cfg

    def core(self, on_stage=None) -> GenerationCore:
        if self._core is None:
            if on_stage is not None:
                on_stage("load_models", 0.0)
            self._core = GenerationCore.load(self.cfg, self.device)
        return self._core

    def check_upload(self, upload) -> Path:
        if not upload:
            raise LipVoicerError("no video given: upload a video or pick the example clip")
        path = Path(str(upload))
        if not path.is_file():
            raise LipVoicerError(f"{path.name}: file not found (upload it again)")
        mb = path.stat().st_size / 2 ** 20
        if mb > self.limits.max_upload_mb:
            raise LipVoicerError(f"{path.name}: file is {mb:.1f} MB; the limit is {self.limits.max_upload_mb:g} MB "
                                 f"(app.py --max-upload-mb)")
        return path

    # ------------------------------------------------------------------ one request
    def run(self, upload, *, text: str | None = None, w_video: float = 2.0, w_asr: float = 1.5,
            sampler: str = "ancestral", steps: int | None = None, seed: int = 0, on_progress=None) -> dict:
        """Speech for the uploaded video; returns the result's files and facts (dir: the request's
        folder, for cleanup). Raises LipVoicerError (one line, the uploaded file named by its name)."""
        source = self.check_upload(upload)
        req_dir = Path(tempfile.mkdtemp(prefix="request-", dir=self.work_root))
        video = req_dir / "input" / source.name
        try:
            video.parent.mkdir()
            shutil.copyfile(source, video)
            cfg = self.request_cfg(video, req_dir / "out", text=text, w_video=w_video, w_asr=w_asr,
                                   sampler=sampler, steps=steps, seed=seed)
            with self._lock:
                check_generation_settings(cfg)
                base = self.core(StageProgress(on_progress, 1))
                core = dataclasses.replace(base, sampler=build_sampler(cfg, base.sampler.schedule))
                n_steps = core.sampler.steps if core.sampler.name != "ancestral" else core.sampler.schedule.T
                out = generate_for_video(cfg, core, on_stage=StageProgress(on_progress, n_steps))
        except LipVoicerError as e:
            self.cleanup(req_dir)
            raise LipVoicerError(str(e).replace(str(video), video.name).replace(str(req_dir), "<request>")) from None
        except BaseException:
            self.cleanup(req_dir)
            raise
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        name = video.stem
        report = json.loads((out / f"{name}.json").read_text())
        files = {kind: out / fname for kind, fname in report["files"].items()}
        return {"dir": req_dir, "video": files["video"], "wav": files["wav"], "mel_png": files["mel_png"],
                "mouth_video": files.get("mouth_video"), "report": files["report"], "text": report["text"],
                "text_source": report["text_source"], "face_detection": report.get("face_detection", {}),
                "segments": report.get("segments", []), "lse": report.get("lse"),
                "timings_s": report["timings_s"], "seconds": report["seconds"],
                "audio_seconds": report["audio_seconds"], "device": report["device"]}

    def cleanup(self, req_dir) -> None:
        """Remove one request's folder (only folders of this demo)."""
        if req_dir and Path(req_dir).parent == self.work_root:
            shutil.rmtree(req_dir, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.work_root, ignore_errors=True)


def sync_cell(g: dict) -> str:
    """A segment's LSE-C / LSE-D (pipelines/segment_sync.py) as a table cell."""
    s = g.get("sync")
    if not s:
        return "-"
    return "n/a" if "error" in s else f"{s['lse_c']:.2f} / {s['lse_d']:.2f}"


def segments_markdown(segments: list[dict]) -> str:
    """The report's segments as a Markdown table: time, speaker, status, the text or why it is silent, and
    LSE-C / LSE-D when the report has them."""
    sync = any("sync" in g for g in segments)
    lines = ["| segment | speaker | status | text / reason |" + (" LSE-C / LSE-D |" if sync else ""),
             "|---|---|---|---|" + ("---|" if sync else "")]
    for g in segments:
        what = (g["text"] or "(no text)") if g["status"] == "generated" else g["reason"]
        speaker = "-" if g["speaker"] is None else g["speaker"]
        lines.append(f"| {g['start_s']:.2f}-{g['end_s']:.2f} s | {speaker} | {g['status']} | "
                     f"{what.replace('|', '/')} |" + (f" {sync_cell(g)} |" if sync else ""))
    return "\n".join(lines)


def stats_markdown(result: dict) -> str:
    """The segments, face detection and seconds per stage, as Markdown tables."""
    det = result.get("face_detection") or {}
    lines = [f"**{result['seconds']:.2f} s** of video -> **{result['audio_seconds']:.2f} s** of speech "
             f"on {result['device']}", ""]
    if result.get("segments"):
        lines += [segments_markdown(result["segments"]), ""]
    if result.get("lse"):
        lines += [f"LSE-C / LSE-D: {result['lse']['about']}.", ""]
    lines += ["| face detection | frames |", "|---|---|"]
    names = {"frames": "frames (25 fps)", "frames_with_any_face": "with a face detected",
             "face_fraction": "fraction with a face"}
    lines += [f"| {names.get(k, k)} | {v} |" for k, v in det.items() if isinstance(v, (int, float, str))]
    lines += [f"| shots | {len(det['shots'])} |"] if "shots" in det else []
    lines += ["", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in result["timings_s"].items()]
    return "\n".join(lines)
