"""Speech with phoneme timings from the espeak-ng shared library (ctypes).

The espeak-ng command line prints no phoneme timings without MBROLA voices, but
the library does: initialised with phoneme events, its synthesis callback receives
the audio in blocks together with events, and every phoneme event carries the
phoneme's name and its start within the generated audio (milliseconds).

    utt = synthesize("place the red cup", voice="en-us+f3", rate=160, pitch=60)
    utt.samples        # int16 mono at utt.sample_rate (22,050 Hz)
    utt.phonemes       # [Phoneme(name="p", start=0.012, end=0.081), ...] in seconds

Install: `apt-get install espeak-ng` (Debian/Ubuntu; it brings libespeak-ng1).
One engine per process: the library is global state, so calls are serialised by a lock;
use processes (not threads) for parallel synthesis. espeak-ng 1.51 carries some state
from one utterance to the next (its pitch "flutter" position, the noise generator), so
the same text gives slightly different audio depending on what was spoken before in the
process; `synthesize(..., isolated=True)` speaks in a forked child of a process that has
not spoken yet, which makes the result depend on its arguments only.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import threading
from dataclasses import dataclass, field

import numpy as np

from utils.errors import LipVoicerError

# espeak_AUDIO_OUTPUT
_OUTPUT_SYNCHRONOUS = 2
# espeak_Initialize options
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
# espeak_EVENT_TYPE
_EV_LIST_TERMINATED = 0
_EV_WORD = 1
_EV_END = 5
_EV_MSG_TERMINATED = 6
_EV_PHONEME = 7
# espeak_PARAMETER
_P_RATE, _P_VOLUME, _P_PITCH, _P_RANGE, _P_WORDGAP = 1, 2, 3, 4, 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0

RATE_MIN, RATE_MAX = 80, 450

INSTALL_HINT = "install espeak-ng (Debian/Ubuntu: sudo apt-get install espeak-ng)"


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Phoneme:
    name: str      # IPA (e.g. "oʊ"); pauses are "" (espeak reports them as "_"-style names)
    start: float   # seconds
    end: float     # seconds


@dataclass
class Utterance:
    samples: np.ndarray            # int16 mono
    sample_rate: int
    phonemes: list[Phoneme] = field(default_factory=list)
    words: list[tuple[int, float]] = field(default_factory=list)  # (text position, start seconds)

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


class _Engine:
    """The process-wide espeak-ng library, initialised once."""

    def __init__(self):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise LipVoicerError(f"libespeak-ng not found ({name}): {INSTALL_HINT}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_OUTPUT_SYNCHRONOUS, 0, None,
                                     _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT)
        if rate <= 0:
            raise LipVoicerError(f"espeak-ng failed to initialise (espeak-ng-data missing?): {INSTALL_HINT}")
        self.lib = lib
        self.sample_rate = int(rate)
        self._blocks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []
        self._cb = _CALLBACK(self._on_audio)  # keep a reference: the library holds a raw pointer
        lib.espeak_SetSynthCallback(self._cb)

    def _on_audio(self, wav, n, events) -> int:
        if wav and n > 0:
            self._blocks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        if events:
            i = 0
            while True:
                ev = events[i]
                if ev.type == _EV_LIST_TERMINATED:
                    break
                if ev.type == _EV_PHONEME:
                    raw = bytes(ev.id.string).split(b"\0", 1)[0]
                    self._events.append((ev.type, ev.audio_position, ev.text_position,
                                         raw.decode("utf-8", errors="replace")))
                elif ev.type == _EV_WORD:
                    self._events.append((ev.type, ev.audio_position, ev.text_position, ""))
                i += 1
        return 0

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int,
                   word_gap: int) -> Utterance:
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise LipVoicerError(f"espeak-ng voice '{voice}' not found (list them with `espeak-ng --voices`)")
        for param, value in ((_P_RATE, int(np.clip(rate, RATE_MIN, RATE_MAX))), (_P_PITCH, int(pitch)),
                             (_P_RANGE, int(pitch_range)), (_P_WORDGAP, int(word_gap)), (_P_VOLUME, 100)):
            lib.espeak_SetParameter(param, value, 0)
        self._blocks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        err = lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if err != _EE_OK:
            raise LipVoicerError(f"espeak-ng could not synthesise {text!r} (error {err})")
        samples = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.int16)
        samples = samples.astype(np.int16, copy=False)
        sr = self.sample_rate
        total = len(samples) / float(sr)
        starts = [(ev[1] / 1000.0, ev[3]) for ev in self._events if ev[0] == _EV_PHONEME]
        phonemes = []
        for k, (t, name) in enumerate(starts):
            end = starts[k + 1][0] if k + 1 < len(starts) else total
            t, end = min(t, total), min(max(end, t), total)
            phonemes.append(Phoneme(name=name, start=t, end=end))
        words = [(ev[2], ev[1] / 1000.0) for ev in self._events if ev[0] == _EV_WORD]
        return Utterance(samples=samples, sample_rate=sr, phonemes=phonemes, words=words)


_engine: _Engine | None = None
_lock = threading.Lock()


def available() -> bool:
    """True when libespeak-ng loads and initialises in this process."""
    try:
        _get_engine()
        return True
    except LipVoicerError:
        return False


def _get_engine() -> _Engine:
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50,
               word_gap: int = 0, isolated: bool = True) -> Utterance:
    """Speak `text`; returns the audio (int16 at the library's rate) and the phoneme timings.

    voice: an espeak-ng voice name, optionally with a variant (`en-us+f3`); rate in words per
    minute (80-450); pitch and pitch_range 0-100 (50 = normal); word_gap in units of 10 ms.
    isolated (the default): synthesise in a forked child process (POSIX), so that nothing spoken earlier in
    this process changes the result (reproducible corpora). isolated=False speaks in this process (a fork
    less per call), and from then on the children of this process inherit what it spoke: a later isolated
    call may then differ from the same call in a fresh process.
    """
    if not text.strip():
        raise LipVoicerError("espeak-ng: empty text")
    args = (text, voice, rate, pitch, pitch_range, word_gap)
    with _lock:
        engine = _get_engine()
        if isolated and hasattr(os, "fork"):
            return _in_child(engine, args)
        return engine.synthesize(*args)


def _in_child(engine: _Engine, args) -> Utterance:
    """Run engine.synthesize(*args) in a forked child; the parent's engine state stays untouched."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: speak, send the pickled result (or the error), leave without cleanup
        code = 0
        try:
            os.close(rfd)
            try:
                payload = pickle.dumps(("ok", engine.synthesize(*args)))
            except LipVoicerError as e:
                payload = pickle.dumps(("error", str(e)))
            with os.fdopen(wfd, "wb") as w:
                w.write(payload)
        except BaseException:  # noqa: BLE001 - never return into the parent's code
            code = 1
        os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    _, status = os.waitpid(pid, 0)
    if not data or status != 0:
        raise LipVoicerError(f"espeak-ng: synthesis of {args[0]!r} failed in the child process (status {status})")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise LipVoicerError(value)
    return value
