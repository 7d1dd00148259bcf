"""The text that guides each speech segment of a video.

`generate.text` may be:

* null / empty: the lip reader reads each segment's mouth crops (`text_source` "lip reader"); with a
  model set that has no lip reader (model_set.lip_reader false), the transcript `<video>.txt` beside the
  video as one text, else no text at all (no ASR guidance, with a warning);
* one text: the text of a video with one speech segment (a video with several is refused, naming
  the segments: one text cannot be split over them without guessing);
* a list of texts, one per speech segment in time order (`generate.text="['first one','second one']"`);
* a subtitle file (`.srt` / `.vtt`, dataloaders/subtitles.py): each segment is guided by the cues it
  overlaps most; a segment no cue falls into becomes silent (the transcript says nobody speaks there).

    plan = text_plan(cfg)                      # checked before the video is read
    apply_texts(plan, segments, fps, source)   # sets .text / .text_source (and silences uncued segments)
    needs_lip_reading(plan)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dataloaders.prep.segments import SILENT, Segment
from dataloaders.subtitles import Cue, assign_cues, is_subtitle_file, read_subtitles
from dataloaders.text import normalize_text, transcript_beside
from models.model_sets import has_lip_reader
from utils.errors import LipVoicerError

LIP_READER, GIVEN, SUBTITLES, NO_TEXT = "lip reader", "generate.text", "subtitles", "none"


@dataclass
class TextPlan:
    kind: str                                  # LIP_READER | GIVEN | SUBTITLES | NO_TEXT
    texts: list[str] = field(default_factory=list)
    cues: list[Cue] = field(default_factory=list)
    file: str | None = None
    source: str = GIVEN                        # text_source of GIVEN / NO_TEXT segments


def text_plan(cfg) -> TextPlan:
    """generate.text as a TextPlan (a subtitle file is read now: a bad one stops before the video is read)."""
    given = cfg["generate"].get("text")
    if given is None or (isinstance(given, str) and not given.strip()):
        if has_lip_reader(cfg):
            return TextPlan(LIP_READER)
        # a model set without a lip reader (model_set.lip_reader false): the transcript beside the video, else no text
        text, source = transcript_beside(Path(str(cfg["generate"]["video_path"])))
        return TextPlan(GIVEN, [text], source=source) if text else TextPlan(NO_TEXT, source=source)
    if isinstance(given, (str, int, float)) and not isinstance(given, bool):
        if is_subtitle_file(str(given)):
            return TextPlan(SUBTITLES, cues=read_subtitles(str(given).strip()), file=str(given).strip())
        return TextPlan(GIVEN, [normalize_text(str(given))])
    try:
        texts = [normalize_text(str(t)) for t in list(given)]
    except TypeError:
        raise LipVoicerError(f"generate.text={given!r}: must be a text, a list of texts (one per speech segment) "
                             f"or a .srt / .vtt subtitle file") from None
    if not texts:
        raise LipVoicerError("generate.text=[]: an empty list (give one text per speech segment, or null to read "
                             "the lips)")
    return TextPlan(GIVEN, texts)


def needs_lip_reading(plan: TextPlan) -> bool:
    return plan.kind == LIP_READER


def _spans(segments: list[Segment], fps: float) -> str:
    return ", ".join(f"{g.start / fps:.2f}-{g.stop / fps:.2f} s" for g in segments)


def apply_texts(plan: TextPlan, segments: list[Segment], fps: float, source: str) -> None:
    """Set text and text_source of the generated segments (time order); see the module text."""
    speech = [g for g in segments if g.generated]
    if plan.kind in (LIP_READER, NO_TEXT):
        for g in speech:
            g.text, g.text_source = ("" if plan.kind == NO_TEXT else g.text), (
                LIP_READER if plan.kind == LIP_READER else plan.source)
        return
    if plan.kind == SUBTITLES:
        cued = assign_cues(plan.cues, [(g.start / fps, g.stop / fps) for g in speech])
        for g, ks in zip(speech, cued):
            if ks:
                g.text = normalize_text(" ".join(plan.cues[k].text for k in ks))
                g.text_source = f"{SUBTITLES} ({plan.file})"
            else:
                g.status, g.reason = SILENT, f"no cue of {plan.file} falls into it"
        return
    if len(plan.texts) != len(speech):
        what = "one text" if len(plan.texts) == 1 else f"{len(plan.texts)} texts"
        given = "generate.text" if plan.source == GIVEN else plan.source   # or the transcript beside the video
        raise LipVoicerError(
            f"{source}: {given} gives {what} for {len(speech)} speech segments ({_spans(speech, fps)}); give "
            f"one text per segment as a list (generate.text=\"['...','...']\"), a .srt / .vtt subtitle file, or no "
            f"text (the lips are read)")
    for g, t in zip(speech, plan.texts):
        g.text, g.text_source = t, plan.source
