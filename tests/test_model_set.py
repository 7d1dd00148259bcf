"""Model sets (models=<name>, models/model_sets.py): the recipe's export, its checks, the Griffin-Lim vocoder,
int8 storage, text without a lip reader, and the shipped synthetic set on the bundled example clip."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import compose_cfg
from tests.parity_utils import REPO_ROOT
from tests.tiny_generation import TOKENIZER_VOCAB, make_synthetic_clips, make_tiny_assets, mean_face_source
from utils.errors import LipVoicerError

SET_NAME = "tiny_set"   # the exported test set's config group option (configs/models/tiny_set.yaml in a temp folder)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """A fake recipe work folder holding tiny checkpoints, exported as a model set with its config file."""
    from recipes.synthetic_model_set import export_model_set
    from recipes.synthetic_settings import RecipeSettings

    root = tmp_path_factory.mktemp("modelset")
    assets = make_tiny_assets(root / "assets")
    work = root / "work"
    s = RecipeSettings(work_dir=work, size="tiny", vocoder="griffinlim", vocab_size=TOKENIZER_VOCAB,
                       mean_face=mean_face_source(), grammar="homophene", extra=["diffusion.T=12", "generate.asr_start=8"])
    (work / "exp" / "synthetic" / "wnet_tiny" / "checkpoint").mkdir(parents=True)
    shutil.copy(assets / "melgen.pkl", work / "exp" / "synthetic" / "wnet_tiny" / "checkpoint" / "7.pkl")
    s.asr_dir("guidance").mkdir(parents=True)
    shutil.copy(assets / "checkpoints" / "checkpoints_ft_lrs3.ckpt", s.asr_dir("guidance") / "5.pkl")
    s.tokenizer.parent.mkdir(parents=True)
    shutil.copy(assets / "checkpoints" / "tokenizerbpe256.model", s.tokenizer)
    (s.data / "videos" / "pretrain" / "spk00").mkdir(parents=True)
    (s.data / "videos" / "pretrain" / "spk00" / "00001.txt").write_text("Text:  BAT TIP FAN\n")
    configs = root / "configs"
    manifest = export_model_set(s, root / "set", configs / "models" / f"{SET_NAME}.yaml")
    corpus = make_synthetic_clips(root / "corpus", n_clips=1)
    video = sorted((corpus / "videos").rglob("*.mp4"))[0]
    return {"root": root, "set": root / "set", "configs": configs, "manifest": manifest, "video": video,
            "melgen": assets / "melgen.pkl"}


def _set_cfg(tiny_set, *extra):
    return compose_cfg([f"hydra.searchpath=[file://{tiny_set['configs']}]", f"models={SET_NAME}",
                        "generate.device=cpu", "generate.progress=false", "prep.progress=false", *extra])


def test_export_writes_a_checked_set_and_its_config(tiny_set):
    manifest = json.loads(tiny_set["manifest"].read_text())
    folder = tiny_set["set"]
    assert set(manifest["files"]) == {"melgen.pt", "asr.pt", "tokenizer.model", "mean_face.npy"}   # Griffin-Lim: no vocoder file
    assert manifest["iterations"] == {"melgen": 7, "guidance_asr": 5} and manifest["vocoder"] == "griffinlim"
    assert "3-word language" in manifest["notice"]            # BAT TIP FAN: the corpus's words are counted
    cfg = _set_cfg(tiny_set)
    assert cfg.model_set.name == "synthetic" and not cfg.model_set.lip_reader
    assert cfg.melgen.res_channels == compose_cfg(["melgen=tiny"]).melgen.res_channels
    assert cfg.diffusion.T == 12 and cfg.generate.asr_start == 8 and cfg.vocoder.kind == "griffinlim"
    assert cfg.asr.vocab_size == TOKENIZER_VOCAB and list(cfg.asr.dims) == [16, 24, 32]
    # float16 weights, and the face stream's ResNet in int8 with one scale per output channel
    from utils.checkpoint import INT8_SCALE

    sd = torch.load(folder / "melgen.pt", map_location="cpu")["model_state_dict"]
    kinds = {v.dtype for k, v in sd.items() if k.startswith("net_facial.feature_extraction.") and v.dim() == 4
             and not k.endswith(INT8_SCALE)}
    assert kinds == {torch.int8}
    assert {v.dtype for k, v in sd.items() if k.startswith("net_diffwave.") and v.is_floating_point()} == {torch.float16}


def test_stored_weights_load_close_to_the_trained_ones(tiny_set):
    from models.builders import load_melgen

    cfg = _set_cfg(tiny_set)
    from models.model_sets import resolve_model_set

    resolve_model_set(cfg)
    small = load_melgen(cfg.generate.ckpt_path, cfg, inference=False).state_dict()
    full = load_melgen(tiny_set["melgen"], cfg, inference=False).state_dict()
    for k, v in full.items():
        if not v.is_floating_point() or v.abs().max() == 0:
            continue
        rel = float((small[k].float() - v).abs().max() / v.abs().max())
        # (the face stream's first convolution is also its ResNet's: stored once as int8)
        assert rel < (1 / 127 if k.startswith("net_facial.") else 1e-3), (k, rel)


def test_int8_round_trip_is_within_half_a_step():
    from utils.checkpoint import INT8_SCALE, dequantize_int8, quantize_int8

    w = torch.randn(6, 4, 3, 3)
    q, scale = quantize_int8(w)
    back = dequantize_int8({"w": q, "w" + INT8_SCALE: scale, "b": torch.ones(2)})
    assert set(back) == {"w", "b"} and back["w"].dtype == torch.float32
    assert torch.all((back["w"] - w).abs() <= scale.float() * 0.51 + 1e-3 * w.abs().amax())


def test_generation_with_the_set_reads_the_transcript_beside_the_video(tiny_set, tmp_path, caplog):
    from pipelines.video_to_speech import generate_for_video

    video = tmp_path / "clip.mp4"
    shutil.copy(tiny_set["video"], video)
    (tmp_path / "clip.txt").write_text("Text:  BAT TIP FAN\n")
    cfg = _set_cfg(tiny_set, f"generate.video_path={video}", f"generate.save_dir={tmp_path / 'out'}")
    with caplog.at_level(logging.WARNING):
        out = generate_for_video(cfg)
    assert any("synthetic-corpus model set" in r.getMessage() for r in caplog.records)
    report = json.loads((out / "clip.json").read_text())
    assert report["model_set"] == "synthetic" and report["text"] == "bat tip fan"
    assert report["text_source"] == "transcript clip.txt"
    assert report["checkpoints"]["vocoder"] == "griffinlim"
    assert Path(report["checkpoints"]["melgen"]) == tiny_set["set"].resolve() / "melgen.pt"
    import soundfile as sf

    audio, sr = sf.read(out / "clip.wav")
    assert sr == 16000 and abs(len(audio) - 640 * report["frames_25fps"]) <= 640 and np.abs(audio).max() > 0.1


def test_without_transcript_the_set_samples_without_text(tiny_set, tmp_path, caplog):
    from pipelines.video_to_speech import generate_for_video

    video = tmp_path / "other.mp4"
    shutil.copy(tiny_set["video"], video)
    cfg = _set_cfg(tiny_set, f"generate.video_path={video}", f"generate.save_dir={tmp_path / 'out'}")
    with caplog.at_level(logging.WARNING):
        out = generate_for_video(cfg)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("this model set has no lip reader and there is no transcript other.txt" in m for m in msgs), msgs
    report = json.loads((out / "other.json").read_text())
    assert report["text"] == "" and report["text_source"].startswith("none")


def test_a_lip_reader_added_to_a_set_reads_the_lips(tiny_set, tmp_path, caplog):
    """recipes/synthetic_lip_reader.py: a trained lip reader (its exported files) added to a set in float16; the
    set then reads the lips whenever no text is given, a transcript beside the video notwithstanding."""
    from models.model_sets import check_model_set
    from models.vsr.tokens import char_units
    from models.vsr.training import write_lip_reader
    from pipelines.segment_texts import LIP_READER, text_plan
    from pipelines.video_to_speech import generate_for_video
    from recipes.synthetic_lip_reader import SET_FILES, add_to_model_set, lipreader_dir
    from recipes.synthetic_model_set import config_text
    from recipes.synthetic_settings import RecipeSettings
    from trainers.lipreader import build_model, model_json

    folder, configs = tmp_path / "set", tmp_path / "configs"
    shutil.copytree(tiny_set["set"], folder)
    (configs / "models").mkdir(parents=True)
    text = (tiny_set["configs"] / "models" / f"{SET_NAME}.yaml").read_text()
    config = configs / "models" / "with_lips.yaml"
    config.write_text(text.replace(str(tiny_set["set"]), str(folder)))
    s = RecipeSettings(work_dir=tmp_path / "work", size="tiny", grammar="homophene")
    units = char_units(["bat tip fan"])
    torch.manual_seed(0)
    model = build_model(model_json(compose_cfg(["lipreader_train=tiny"]), len(units) + 2), len(units) + 2)
    conf = model_json(compose_cfg(["lipreader_train=tiny"]), len(units) + 2)
    write_lip_reader(lipreader_dir(s), model, conf, units, names=("model.pth", "model.json", "units.txt"))
    (s.work_dir / "lip_reader").mkdir()
    (s.work_dir / "lip_reader" / "scores.json").write_text(json.dumps({"wer_pct": 70.0, "right_group_pct": 90.0}))

    manifest = json.loads(add_to_model_set(s, folder, config).read_text())
    assert set(SET_FILES.values()) <= set(manifest["files"]) and manifest["iterations"] == {"melgen": 7, "guidance_asr": 5}
    assert manifest["lip_reader"]["wer_pct"] == 70.0 and manifest["lip_reader"]["right_group_pct"] == 90.0
    check_model_set(folder)
    assert torch.load(folder / SET_FILES["model_path"])["encoder.embed.0.weight"].dtype == torch.float16
    assert "lip_reader: true" in config_text(s, "x", None, {"beam_size": 10}) and "beam_size: 10" in config_text(
        s, "x", None, {"beam_size": 10})

    video = tmp_path / "clip.mp4"
    shutil.copy(tiny_set["video"], video)
    (tmp_path / "clip.txt").write_text("Text:  BAT TIP FAN\n")   # not used: the set reads the lips
    cfg = compose_cfg([f"hydra.searchpath=[file://{configs}]", "models=with_lips", "generate.device=cpu",
                       "generate.progress=false", "prep.progress=false", f"generate.video_path={video}",
                       f"generate.save_dir={tmp_path / 'out'}"])
    assert cfg.model_set.lip_reader and cfg.vsr.lm_weight == 0 and text_plan(cfg).kind == LIP_READER
    out = generate_for_video(cfg)
    report = json.loads((out / "clip.json").read_text())
    assert report["text_source"] == "lip reader" and set(report["text"]) <= set("batipfn ")


@pytest.mark.parametrize("damage, needle", [
    ("flip", "asr.pt: SHA-256 differs from the model set's manifest"),
    ("truncate", "asr.pt: 10 bytes where the model set's manifest says"),
    ("remove", "asr.pt: file of the 'synthetic' model set is missing"),
    ("manifest", "manifest.json: model set manifest not found"),
])
def test_a_damaged_set_is_refused_in_one_line(tiny_set, tmp_path, damage, needle):
    from pipelines.generation import generation_files

    folder = tmp_path / "set"
    shutil.copytree(tiny_set["set"], folder)
    target = folder / ("manifest.json" if damage == "manifest" else "asr.pt")
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:10])
    else:
        target.unlink()
    cfg = _set_cfg(tiny_set, f"model_set.dir={folder}", "generate.text=hello")
    with pytest.raises(LipVoicerError) as e:
        generation_files(cfg)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_griffin_lim_vocoder_takes_each_clip_at_its_length():
    from dataloaders.audio import log_mel
    from models.griffin_lim import GriffinLimVocoder, griffin_lim
    from models.hifigan.generator import vocode

    t = np.arange(8000) / 16000.0
    wav = torch.from_numpy((0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
    mel = log_mel(wav)                                      # (80, 51)
    voc = GriffinLimVocoder(n_iter=8)
    padded = torch.cat([mel, torch.full((80, 20), float(np.log(1e-5)))], dim=1)
    out = vocode(voc, torch.stack([padded, padded]), lengths=torch.tensor([mel.shape[1], mel.shape[1] + 20]))
    assert out.shape == (2, 160 * 71)
    alone = vocode(voc, mel[None])[0]
    assert torch.allclose(out[0, :160 * mel.shape[1]], alone, atol=1e-5)   # as if it were alone
    assert float(out[0, 160 * mel.shape[1]:].abs().max()) == 0.0
    assert np.allclose(griffin_lim(mel, n_iter=8), alone.numpy(), atol=1e-5)
    g = torch.Generator().manual_seed(0)
    state = torch.get_rng_state()
    voc.one(mel)
    assert torch.equal(state, torch.get_rng_state())        # the caller's random state is left alone
    del g


SHIPPED = REPO_ROOT / "model_sets" / "synthetic"
EXAMPLE = REPO_ROOT / "examples" / "synthetic_clip.mp4"


@pytest.mark.espeak_words   # the homophene groups of the words read
@pytest.mark.skipif(not (SHIPPED / "manifest.json").is_file(), reason="the synthetic model set is not in this checkout")
def test_shipped_set_speaks_the_bundled_example_offline(tmp_path):
    """What `bash run_inference.sh` with no video runs: the example clip through models=synthetic, its text read
    from the lips by the set's lip reader (the transcript beside the clip is not used)."""
    import subprocess

    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert sum(e["bytes"] for e in manifest["files"].values()) < 31e6
    import os

    env = dict(os.environ, LIPVOICER_NO_INSTALL="1")
    res = subprocess.run(["bash", str(REPO_ROOT / "run_inference.sh"), f"generate.save_dir={tmp_path}",
                          "generate.progress=false", "prep.progress=false", "generate.device=cpu",
                          f"hydra.run.dir={tmp_path / 'hydra'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (res.stdout + res.stderr).count("using the synthetic-corpus model set") == 1   # said once, in one line
    report = json.loads((tmp_path / "synthetic_clip" / "synthetic_clip.json").read_text())
    # the set's lip reader puts most test words in the right homophene group (chance: one group in four)
    assert report["text_source"] == "lip reader" and manifest["lip_reader"]["right_group_pct"] > 50
    # the lips decide the homophene group of each word (bat / pat / mat), not the word; the example is a clip the
    # recipe's scoring read with every word in the right group, and the shipped float16 set reads it so too
    from dataloaders.synthetic.corpus import group_function

    group_of = group_function(manifest["grammar"])

    truth = (REPO_ROOT / "examples" / "synthetic_clip.txt").read_text().split()
    read = report["text"].split()
    assert len(read) == len(truth) and [group_of(w) for w in read] == [group_of(w) for w in truth], read
    assert abs(report["audio_seconds"] - report["seconds"]) <= 0.04
    # lipread.py reads the same with the set
    from lipread import lipread
    from utils.config import compose_config

    assert lipread(compose_config(["models=synthetic", f"vsr.input={EXAMPLE}", "prep.progress=false"])) == report["text"]


@pytest.mark.skipif(not (SHIPPED / "manifest.json").is_file(), reason="the synthetic model set is not in this checkout")
def test_the_shipped_set_crops_with_its_mean_face_from_any_folder(tmp_path, monkeypatch):
    """The set's prep.mean_face_path interpolates model_set.dir, which is relative to the repository: the video's
    preparation settings are read after the set's folder is made absolute (they were read before, and a run
    outside the repository stopped at 'mean face not found')."""
    import pipelines.video_to_speech as v2s
    from utils.config import compose_config

    seen = {}

    def stop(path, prep, *a, **k):
        seen["mean_face"] = prep["mean_face_path"]
        raise LipVoicerError("stop here")

    monkeypatch.setattr(v2s, "analyse_segments", stop)
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["models=synthetic", f"generate.video_path={EXAMPLE}", f"generate.save_dir={tmp_path}",
                          "generate.text=bat", "generate.device=cpu", "generate.face_checks=false"])
    with pytest.raises(LipVoicerError, match="stop here"):
        v2s.generate_for_video(cfg)
    assert Path(seen["mean_face"]) == SHIPPED.resolve() / "mean_face.npy"


@pytest.mark.skipif(not (SHIPPED / "manifest.json").is_file(), reason="the synthetic model set is not in this checkout")
def test_demo_falls_back_to_the_shipped_set_without_the_published_checkpoints(tmp_path, caplog):
    from pipelines.demo import choose_models
    from utils.config import compose_config

    empty = [f"paths.checkpoints_dir={tmp_path}", f"generate.ckpt_path={tmp_path / 'melgen.pkl'}"]
    with caplog.at_level(logging.WARNING):
        cfg, why = choose_models(empty, compose_config)
    assert cfg.model_set.name == "synthetic" and "published checkpoints are not here" in why
    assert str(tmp_path / "melgen.pkl") in why and "synthetic-corpus model set" in why and "\n" not in why
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [why]
    cfg, why = choose_models([*empty, "models=published"], compose_config)   # asked for by name: kept
    assert cfg.model_set.name == "published" and why is None


@pytest.mark.skipif(not (SHIPPED / "manifest.json").is_file(), reason="the synthetic model set is not in this checkout")
def test_for_inference_with_the_shipped_set_fetches_nothing(monkeypatch, capsys):
    import download_checkpoints as dl

    monkeypatch.setattr(dl, "fetch_asset", lambda *a, **k: pytest.fail("nothing may be fetched"))
    assert dl.main(["--for-inference", "models=synthetic"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("models=synthetic: every file ships in") and "checked); nothing to fetch" in out


def test_a_transcript_beside_a_video_of_several_segments_is_named_in_the_refusal():
    from dataloaders.prep.segments import GENERATED, Segment
    from pipelines.segment_texts import GIVEN, TextPlan, apply_texts

    segments = [Segment(0, 50, 0, 0, GENERATED), Segment(75, 125, 1, 1, GENERATED)]
    with pytest.raises(LipVoicerError) as e:
        apply_texts(TextPlan(GIVEN, ["bat tip fan"], source="transcript clip.txt"), segments, 25.0, "clip.mp4")
    assert str(e.value).startswith("clip.mp4: transcript clip.txt gives one text for 2 speech segments (0.00-2.00 s, "
                                   "3.00-5.00 s)")
    apply_texts(TextPlan(GIVEN, ["bat tip fan"], source="transcript clip.txt"), segments[:1], 25.0, "clip.mp4")
    assert (segments[0].text, segments[0].text_source) == ("bat tip fan", "transcript clip.txt")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")
def test_griffin_lim_on_a_gpu_matches_the_cpu_and_keeps_the_callers_rng():
    from dataloaders.audio import log_mel
    from models.griffin_lim import GriffinLimVocoder

    t = np.arange(8000) / 16000.0
    mel = log_mel(torch.from_numpy((0.4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)))
    cpu = GriffinLimVocoder(n_iter=8).one(mel)
    state = torch.cuda.get_rng_state()
    gpu = GriffinLimVocoder(n_iter=8).cuda().one(mel.cuda())
    assert gpu.device.type == "cuda" and torch.equal(state, torch.cuda.get_rng_state())
    assert float((gpu.cpu() - cpu).abs().max()) < 0.05 * float(cpu.abs().max())
