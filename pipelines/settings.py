"""Every generation setting checked before any heavy work (before a video is decoded or a model loaded).

    check_generation_settings(cfg)      # raises LipVoicerError: one line per problem

A setting out of range does not quietly become something else (`generate.w_asr=-1` is not
unguided sampling, an `asr_start` past the last diffusion step is not "always"): each
problem is one line naming the setting, the value given and what is allowed, e.g.

    generate.w_asr=-1: must be a number >= 0 (0 turns ASR guidance off)

Checked (generate.* unless named): w_video >= 0; w_asr >= 0; asr_start an integer,
0 <= asr_start < diffusion.T when w_asr > 0 (guidance acts at steps t <= asr_start);
diffusion.T an integer >= 1; sampler one of ancestral | ddim | dpm_solver; steps an
integer 1..diffusion.T for ddim / dpm_solver; eta >= 0; seed an integer; min_seconds and
max_seconds > 0 (min_seconds > max_seconds is a warning: every video is then refused);
min_face_fraction in [0, 1]; max_gap_frames null or an integer >= 0; segment_seconds and
shot_threshold > 0; crossfade_seconds, same_speaker_distance and min_lip_activity >= 0;
min_human_fraction in [0, 1]; asr_smooth null or two odd integers; asr_weight_power >= 0; min_shot_frames an integer >= 1;
text a text, a list of texts or a subtitle file name; batch_size an integer >= 1; n_samples
null or an integer >= 1; device auto | cpu | cuda | cuda:N (cuda only where a GPU is
present); the on/off switches (progress, save_mouth_video, save_video, bf16, cuda_graphs, face_checks, asr_clean) true or false.
"""
from __future__ import annotations

import logging
import math
import re

import torch

from models.diffusion.samplers import SAMPLERS
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

STEP_SAMPLERS = ("ddim", "dpm_solver")   # samplers with a step count (ancestral visits every step)
SWITCHES = ("progress", "save_mouth_video", "save_video", "bf16", "cuda_graphs", "face_checks", "asr_clean")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _number(value) -> float | None:
    """value as a finite float (ints, floats, numeric strings), else None; booleans are not numbers."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _integer(value) -> int | None:
    x = _number(value)
    return int(x) if x is not None and x == int(x) else None


def generation_problems(cfg) -> list[str]:
    """One line per generation setting that makes no sense (empty when all are fine)."""
    gen = cfg["generate"]
    problems: list[str] = []

    def bad(key: str, value, allowed: str) -> None:
        problems.append(f"{key}={value!r}: {allowed}" if isinstance(value, str) else f"{key}={value}: {allowed}")

    def get(key: str, default=None):
        return gen.get(key, default) if hasattr(gen, "get") else default

    T = _integer(cfg["diffusion"]["T"])
    if T is None or T < 1:
        bad("diffusion.T", cfg["diffusion"]["T"], "must be an integer >= 1")
        T = None

    for key, note in (("w_video", " (0 turns video guidance off)"), ("w_asr", " (0 turns ASR guidance off)")):
        x = _number(get(key))
        if x is None or x < 0:
            bad(f"generate.{key}", get(key), f"must be a number >= 0{note}")
    w_asr = _number(get("w_asr"))

    asr_start = _integer(get("asr_start"))
    if asr_start is None:
        bad("generate.asr_start", get("asr_start"), "must be an integer diffusion step")
    elif w_asr is not None and w_asr > 0 and T is not None and not 0 <= asr_start < T:
        bad("generate.asr_start", get("asr_start"),
            f"must be between 0 and {T - 1} (diffusion.T={T} steps; ASR guidance acts at steps t <= asr_start)")

    sampler = get("sampler", "ancestral")
    if str(sampler) not in SAMPLERS:
        bad("generate.sampler", sampler, f"must be one of {', '.join(SAMPLERS)}")
    elif str(sampler) in STEP_SAMPLERS:
        steps = _integer(get("steps"))
        if steps is None or steps < 1 or (T is not None and steps > T):
            upper = f"diffusion.T={T}" if T is not None else "diffusion.T"
            bad("generate.steps", get("steps"), f"the {sampler} sampler needs an integer between 1 and {upper}")
    eta = _number(get("eta", 0.0))
    if eta is None or eta < 0:
        bad("generate.eta", get("eta"), "must be a number >= 0 (0 = deterministic DDIM, 1 = ancestral-like noise)")

    seed = get("seed", 0)
    if _integer(seed) is None:
        bad("generate.seed", seed, "must be an integer")

    lo, hi = _number(get("min_seconds")), _number(get("max_seconds"))
    if lo is None or lo <= 0:
        bad("generate.min_seconds", get("min_seconds"), "must be a number of seconds > 0")
    if hi is None or hi <= 0:
        bad("generate.max_seconds", get("max_seconds"), "must be a number of seconds > 0")
    if lo is not None and hi is not None and lo > 0 and hi > 0 and lo > hi:
        # a warning, not an error: the length check then names the limit the video breaks
        log.warning("generate.min_seconds=%s is more than generate.max_seconds=%s: every video is refused "
                    "(min_seconds should be <= max_seconds)", get("min_seconds"), get("max_seconds"))

    fraction = _number(get("min_face_fraction", 0.0))
    if fraction is None or not 0 <= fraction <= 1:
        bad("generate.min_face_fraction", get("min_face_fraction"),
            "must be a fraction of frames between 0 and 1 (0 accepts any video with a face in one frame)")
    gap = get("max_gap_frames")
    if gap is not None and (_integer(gap) is None or _integer(gap) < 0):
        bad("generate.max_gap_frames", gap, "must be null (no limit) or an integer number of frames >= 0")

    batch = _integer(get("batch_size", 1))
    if batch is None or batch < 1:
        bad("generate.batch_size", get("batch_size"), "must be an integer >= 1")
    bucket = get("bucket_frames")
    bucket_n = _integer(bucket)
    if bucket is not None and str(bucket).strip().lower() != "auto" and (bucket_n is None or bucket_n < 0):
        bad("generate.bucket_frames", bucket, "must be auto, null or 0 (no padding), or a number of video frames >= 1")
    n_samples = get("n_samples")
    if n_samples is not None and (_integer(n_samples) is None or _integer(n_samples) < 1):
        bad("generate.n_samples", n_samples, "must be null (every clip) or an integer >= 1")

    device = str(get("device", "auto")).lower()
    if not _DEVICE.match(device):
        bad("generate.device", get("device"), "must be auto, cpu, cuda or cuda:N")
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            bad("generate.device", get("device"), "no CUDA GPU is available on this machine (use auto or cpu)")
        elif ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            bad("generate.device", get("device"), f"this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                                                  f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")

    for key in SWITCHES:
        value = get(key)
        if value is not None and not isinstance(value, bool):
            bad(f"generate.{key}", value, "must be true or false")

    for key, what in (("segment_seconds", "a number of seconds > 0"),
                      ("shot_threshold", "a number > 0 (PySceneDetect's content threshold; 27 is its default)")):
        x = _number(get(key, 1.0))
        if x is None or x <= 0:
            bad(f"generate.{key}", get(key), f"must be {what}")
    for key, what in (("crossfade_seconds", "a number of seconds >= 0 (0: segments join without fades)"),
                      ("same_speaker_distance", "a number >= 0 (0: every face track is its own speaker)"),
                      ("min_lip_activity", "a number >= 0 (0: every stretch of a kept face speaks)")):
        x = _number(get(key, 0.0))
        if x is None or x < 0:
            bad(f"generate.{key}", get(key), f"must be {what}")
    smooth = get("asr_smooth")
    sizes = list(smooth) if smooth is not None and not isinstance(smooth, (str, int, float, bool)) else None
    if smooth is not None and (sizes is None or len(sizes) != 2 or
                               any(_integer(k) is None or _integer(k) < 1 or _integer(k) % 2 == 0 for k in sizes)):
        bad("generate.asr_smooth", smooth, "must be null or [mel bins, frames], two odd integers >= 1")
    power = _number(get("asr_weight_power", 0.0))
    if power is None or power < 0:
        bad("generate.asr_weight_power", get("asr_weight_power"), "must be a number >= 0 (0: a constant weight)")
    human = _number(get("min_human_fraction", 0.0))
    if human is None or not 0 <= human <= 1:
        bad("generate.min_human_fraction", get("min_human_fraction"), "must be a number in 0..1 (0: no human-face check)")
    seg = _number(get("segment_seconds", 10.0))
    if seg is not None and seg > 0 and lo is not None and lo > 0 and seg < 2 * lo:
        bad("generate.segment_seconds", get("segment_seconds"),
            f"must be at least 2 x generate.min_seconds={get('min_seconds')} (a longer stretch is cut into pieces of "
            f"at least min_seconds)")
    shot = _integer(get("min_shot_frames", 1))
    if shot is None or shot < 1:
        bad("generate.min_shot_frames", get("min_shot_frames"), "must be an integer number of frames >= 1")

    text = get("text")  # Hydra reads generate.text=911 as a number: that is a text too; a list: one per segment
    texts = list(text) if text is not None and not isinstance(text, (str, int, float, bool)) and \
        hasattr(text, "__iter__") and not hasattr(text, "keys") else [text]
    if text is not None and any(isinstance(t, bool) or not isinstance(t, (str, int, float)) for t in texts):
        bad("generate.text", text, "must be a quoted text, e.g. generate.text=\"'hello there'\", a list of texts (one "
                                   "per speech segment) or a .srt / .vtt subtitle file")
    return problems


def check_generation_settings(cfg) -> None:
    """Raise LipVoicerError listing every generation setting that makes no sense, one line each."""
    problems = generation_problems(cfg)
    if problems:
        raise LipVoicerError("\n".join(problems))
