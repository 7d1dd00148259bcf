"""Web demo: upload a silent talking-face video, watch the stages, hear and download the speech.

    python download_checkpoints.py --for-inference     # once: the published models
    python app.py                                      # http://127.0.0.1:7860 (without the published models:
                                                       # the synthetic model set shipped in model_sets/, offline)
    python app.py --device cuda --host 0.0.0.0 --port 8080 dataset=lrs2 generate.w_asr=1.5

Trailing key=value arguments are Hydra-style overrides of configs/config.yaml (as for
inference_real_video.py). Requests are queued and served one at a time by one copy of the
models (pipelines/demo.py), through the same code path as inference_real_video.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from utils.native_output import quiet_native_logging  # noqa: E402

quiet_native_logging()  # before MediaPipe / TensorFlow Lite are imported

import gradio as gr  # noqa: E402

from models.diffusion.samplers import SAMPLERS  # noqa: E402
from pipelines.demo import Demo, DemoLimits, choose_models, stats_markdown  # noqa: E402
from utils.config import compose_config  # noqa: E402
from utils.errors import LipVoicerError  # noqa: E402

log = logging.getLogger("app")
EXAMPLES = Path(__file__).resolve().parent / "examples"


def one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if isinstance(e, LipVoicerError) else f"internal error ({type(e).__name__}): {text.splitlines()[0]}"


def build_ui(demo: Demo) -> gr.Blocks:
    gen = demo.cfg["generate"]
    T = int(demo.cfg["diffusion"]["T"])

    def generate(upload, text, w_video, w_asr, sampler, steps, seed, progress=gr.Progress()):
        def on_progress(fraction, message):
            progress(fraction, desc=message)
        try:
            r = demo.run(upload, text=text, w_video=w_video, w_asr=w_asr, sampler=sampler, steps=steps, seed=seed,
                         on_progress=on_progress)
        except Exception as e:  # noqa: BLE001 - the page shows one line; the log keeps the rest
            if not isinstance(e, LipVoicerError):
                log.exception("request failed")
            return ("**Error:** " + one_line(e).replace("\n", "  \n"), None, None, None, None, "", "", None)
        downloads = [str(r["wav"]), str(r["video"])]
        status = f"Done: {Path(str(upload)).name} -> {r['audio_seconds']:.2f} s of speech."
        return (status, str(r["video"]), downloads, str(r["mel_png"]),
                str(r["mouth_video"]) if r["mouth_video"] else None,
                f"{r['text'] or '(empty)'}\n(source: {r['text_source']})", stats_markdown(r), str(r["dir"]))

    def cleanup(req_dir):
        demo.cleanup(req_dir)
        return None

    with gr.Blocks(title="LipVoicer demo", delete_cache=(600, 3600)) as ui:
        gr.Markdown("# LipVoicer: speech for a silent talking-face video\n"
                    "Upload a video with a speaking face (or pick the example; cutaways, several people and long "
                    "recordings are cut into speech segments, listed under the result), optionally type what is said "
                    "(otherwise the lips are read), and press **Generate**.")
        if demo.models_note:
            gr.Markdown(f"*{demo.models_note}*", elem_id="models-note")
        with gr.Row():
            with gr.Column():
                video_in = gr.File(label="Video", file_count="single", type="filepath", elem_id="video-in")
                example = EXAMPLES / "synthetic_clip.mp4"
                text_in = gr.Textbox(label="Spoken text (optional; empty = lip reading)", elem_id="text-in")
                if example.is_file():   # no text: the lips are read (both model sets have a lip reader)
                    gr.Examples([[str(example), ""]], inputs=[video_in, text_in],
                                label="Example clip (synthetic corpus; its lips are read)")
                with gr.Row():
                    w_video = gr.Slider(0, 5, value=float(gen["w_video"]), step=0.1, label="Video guidance (w_video)")
                    w_asr = gr.Slider(0, 5, value=float(gen["w_asr"]), step=0.1, label="ASR guidance (w_asr)")
                with gr.Row():
                    sampler = gr.Dropdown(list(SAMPLERS), value=str(gen["sampler"]), label="Sampler")
                    steps = gr.Slider(1, T, value=min(int(gen["steps"]), T), step=1,
                                      label="Steps", info=f"ddim, dpm_solver (ancestral takes all {T})")
                    seed = gr.Number(value=int(gen["seed"]), precision=0, label="Seed")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown(elem_id="status")
                text_out = gr.Textbox(label="Text that guided it", elem_id="text-out", interactive=False, lines=2)
                stats = gr.Markdown(elem_id="stats")
            with gr.Column():
                video_out = gr.Video(label="Video with the generated speech", elem_id="result-video",
                                     interactive=False, height=360)
                downloads = gr.File(label="Downloads (wav, mp4)", file_count="multiple", elem_id="downloads",
                                    interactive=False)
                with gr.Row():
                    mel = gr.Image(label="Mel spectrogram", type="filepath", elem_id="mel", interactive=False,
                                   height=240)
                    mouth = gr.Video(label="Mouth crops", elem_id="mouth-video", interactive=False, height=240)
        request_dir = gr.State(None)
        button.click(generate, inputs=[video_in, text_in, w_video, w_asr, sampler, steps, seed],
                     outputs=[status, video_out, downloads, mel, mouth, text_out, stats, request_dir],
                     concurrency_limit=1, concurrency_id="model").then(
            cleanup, inputs=[request_dir], outputs=[request_dir])
    ui.queue(default_concurrency_limit=1, max_size=32)
    return ui


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="LipVoicer web demo", epilog="trailing key=value: config overrides")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: generate.device)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload accepted")
    p.add_argument("--max-seconds", type=float, default=20.0, help="longest video accepted")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. generate.w_asr=1.5 dataset=lrs2")
    args = p.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"not a key=value override: {bad[0]}")
    return args


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    overrides = list(args.overrides) + ([f"generate.device={args.device}"] if args.device else [])
    try:
        cfg, models_note = choose_models(overrides, compose_config)   # published, else the synthetic set
        demo = Demo(cfg, DemoLimits(max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds),
                    models_note=models_note)
    except Exception as e:  # noqa: BLE001 - a bad override or device: one line
        sys.exit(f"error: {one_line(e)}")
    ui = build_ui(demo)
    try:
        ui.launch(server_name=args.host, server_port=args.port, max_file_size=f"{args.max_upload_mb:g}mb",
                  show_error=False, allowed_paths=[str(EXAMPLES)], share=False)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
