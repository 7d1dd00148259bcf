"""Video and audio in and out of media files with PyAV (bundled FFmpeg; no ffmpeg binary needed), one
module per role:

* `probe`        opening a file, what its header says (probe_video), the truncation tolerance;
* `orientation`  the display matrix (a phone's rotation) applied to decoded pictures;
* `decode`       the streaming decoder (VideoFrames, open_video_stream, iter_video_frames: upright, at 25 fps,
                 memory not growing with length), whole videos in memory (read_video, read_video_at_fps) and
                 the audio stream (read_audio);
* `encode`       H.264 .mp4 files from frames (write_video);
* `mux`          a new sound track on a user's video (mux_plan, then mux_audio: stream copy or re-encoding).

    for img in iter_video_frames("clip.mp4", 25): ...  # uint8 RGB (H, W, 3) at 25 fps, one at a time
    frames, fps = read_video("clip.mp4")              # uint8 RGB (T, H, W, 3), frames per second
    write_video("out.mp4", frames, 25, audio=wav, sample_rate=16000)
    plan = mux_plan("phone.mov", "with_speech.mp4")   # copy or re-encode: known before any long work
    mux_audio("phone.mov", wav, 16000, "with_speech.mp4", plan=plan)

Every writer goes through a temporary name in the destination folder and an atomic rename.
Unreadable input raises LipVoicerError with one line naming the file and the reason.

The project imports from the role modules. The names below are also importable from the package
itself, the flat path of the module this package replaced, for code written against it (the
synthetic corpus and the recipes are maintained on another branch).
"""
from dataloaders.video_io.decode import (VideoFrames, iter_video_frames, open_video_stream, read_audio,  # noqa: F401
                                         read_video, read_video_at_fps, resample_indices)
from dataloaders.video_io.encode import write_video  # noqa: F401
from dataloaders.video_io.mux import MuxPlan, mux_audio, mux_plan  # noqa: F401
from dataloaders.video_io.probe import missing_frames_tolerated, probe_video  # noqa: F401

__all__ = ["VideoFrames", "iter_video_frames", "open_video_stream", "read_audio", "read_video", "read_video_at_fps",
           "resample_indices", "write_video", "MuxPlan", "mux_audio", "mux_plan", "missing_frames_tolerated",
           "probe_video"]
