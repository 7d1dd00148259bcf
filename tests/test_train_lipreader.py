"""train_lipreader.py: a tiny lip reader on the tiny LRS3-layout corpus (CPU, seconds); its files load through
the lip reader's own loader; exact resume; bad clips are one line naming the file."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.helpers import compose_cfg, run_script_in_process
from utils.errors import LipVoicerError


def overrides(corpus, save_dir, extra=()):
    return ["lipreader_train=tiny", f"dataset.root={corpus}", f"lipreader_train.save_dir={save_dir}",
            "lipreader_train.device=cpu", *extra]


def test_units_encode_and_model_json_round_trip(tmp_path):
    from models.vsr.model import VSRModel
    from models.vsr.model_json import parse_vsr_json
    from models.vsr.tokens import WORD_MARK, TokenList, char_units, units_file_text
    from trainers.lipreader import model_json

    units = char_units(["dug bone", "it's ten"])
    assert units == ["<unk>", "'", "B", "D", "E", "G", "I", "N", "O", "S", "T", "U", WORD_MARK]
    path = tmp_path / "units.txt"
    path.write_text(units_file_text(units), encoding="utf-8")
    assert path.read_text(encoding="utf-8").splitlines()[:2] == ["<unk> 1", "' 2"]   # as unigram5000_units.txt
    tokens = TokenList.from_units_file(path)
    ids = tokens.encode("dug it's")
    assert tokens.text([tokens.sos, *ids, tokens.eos]) == "dug it's"
    with pytest.raises(LipVoicerError, match=r"^clip\.txt: 'Z' of the word 'zoo' is not covered by the lip reader's "
                                             r"13 units$"):
        tokens.encode("dug zoo", "clip.txt")
    conf = model_json(compose_cfg(["lipreader_train=tiny"]), len(tokens))
    vcfg = parse_vsr_json(conf)
    assert conf[1] == len(tokens) and vcfg.frontend_width == 4 and vcfg.mtlalpha == 0.1
    assert VSRModel(vcfg, len(tokens)).encoder.frontend.out_dim == 32


def test_padded_batch_equals_clips_alone():
    """The encoder's masks: a clip's encoding and decoder output do not depend on the padding of its batch."""
    from trainers.lipreader import build_model, model_json

    torch.manual_seed(0)
    model = build_model(model_json(compose_cfg(["lipreader_train=tiny"]), 9), 9).eval()
    video = torch.randn(2, 1, 12, 88, 88)
    video[1, :, 7:] = 0.0
    lengths = torch.tensor([12, 7])
    ys = torch.tensor([[8, 3, 4], [8, 5, 8]])
    with torch.no_grad():
        enc, ctc, dec = model(video, lengths, ys)
        alone_enc, alone_ctc, alone_dec = model(video[1:, :, :7], None, ys[1:])
    torch.testing.assert_close(enc[1, :7], alone_enc[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dec[1], alone_dec[0], rtol=1e-5, atol=1e-5)


def test_train_resume_exactly_and_load_through_the_reader(tiny_corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from models.vsr.reader import load_lip_reader
    from trainers.lipreader import experiment_dir, train

    base = overrides(tiny_corpus, tmp_path / "a", ["lipreader_train.iters_per_ckpt=2",
                                                    "lipreader_train.iters_per_eval=2"])
    cfg = compose_cfg(base + ["lipreader_train.n_iters=2"])
    first = train(cfg)
    assert first is not None and first.name == "2.pkl"
    exp = experiment_dir(cfg)
    assert (exp / "units.txt").read_text().splitlines()[0] == "<unk> 1"   # clip number <n>: characters
    # resumed to 4 == straight to 4 (weights, optimizer moments: the step after the resume is the same step)
    resumed = train(compose_cfg(base + ["lipreader_train.n_iters=4"]))
    straight = train(compose_cfg(overrides(tiny_corpus, tmp_path / "b", ["lipreader_train.iters_per_ckpt=4",
                                                                         "lipreader_train.n_iters=4"])))
    a, b = (torch.load(p, weights_only=False) for p in (resumed, straight))
    assert a["iteration"] == b["iteration"] == 4
    assert all(torch.equal(a["model_state_dict"][k], b["model_state_dict"][k]) for k in a["model_state_dict"])
    moments = [(s["exp_avg"], t["exp_avg"]) for s, t in zip(a["optimizer_state_dict"]["state"].values(),
                                                           b["optimizer_state_dict"]["state"].values())]
    assert all(torch.equal(x, y) for x, y in moments)
    ev = EventAccumulator(str(exp / "tensorboard"))
    ev.Reload()
    assert {"train/loss", "train/ctc", "train/att", "train/acc", "train/learning_rate", "eval/wer",
            "eval/cer"} <= set(ev.Tags()["scalars"])
    assert [e.step for e in ev.Scalars("eval/wer")] == [2, 4]

    # the newest model as the published one ships, read by the inference reader
    reader = load_lip_reader(compose_cfg([f"vsr.model_path={exp / 'model.pth'}", f"vsr.model_conf={exp / 'model.json'}",
                                          f"vsr.units_path={exp / 'units.txt'}", "vsr.lm_weight=0", "vsr.beam_size=3"]))
    trained = a["model_state_dict"]
    assert all(torch.equal(reader.model.state_dict()[k], trained[k]) for k in trained)
    crops = np.load(tiny_corpus / "mouth_rois" / "test" / "spk2" / "00001.npz")["data"]
    text = reader.read(crops, "cpu")
    units = [line.split()[0].lower() for line in (exp / "units.txt").read_text().splitlines()]
    assert isinstance(text, str) and set(text) <= set("".join(u for u in units if len(u) == 1)) | {" "}
    assert reader.read(crops, "cpu") == text


def _bad_corpus(tiny_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    return root


@pytest.mark.parametrize("damage,reason", [
    ("crops", "mouth crops not found (make them with dataloaders/extract_mouthcrops.py)"),
    ("empty", "transcript is empty"),
    ("no_words", "the transcript has no words (its first line should be 'Text:' and the words)"),
    ("units", "'M' of the word 'number' is not covered by the lip reader's 8 units"),
])
def test_a_bad_clip_is_one_line_naming_its_file(tiny_corpus, tmp_path, damage, reason):
    from trainers.lipreader import train

    root = _bad_corpus(tiny_corpus, tmp_path)
    clip = "pretrain/spk0/00002"
    extra = ["lipreader_train.n_iters=2", "lipreader_train.max_bad_fraction=0"]
    bad = root / "videos" / f"{clip}.txt"
    if damage == "crops":
        bad = root / "mouth_rois" / f"{clip}.npz"
        bad.unlink()
    elif damage == "empty":
        bad.write_text("")
    elif damage == "no_words":
        bad.write_text("Text:  \nConf:  4\n")
    else:
        units = tmp_path / "few_units.txt"
        units.write_text("".join(f"{u} {i}\n" for i, u in enumerate(["<unk>", "C", "L", "I", "P", "\u2581",
                                                                     "N", "U"], 1)), encoding="utf-8")
        extra.append(f"lipreader_train.units={units}")
    with pytest.raises(LipVoicerError) as e:
        train(compose_cfg(overrides(root, tmp_path / "x", extra)))
    msg = str(e.value)
    if damage == "units":   # every clip is bad: the first one drawn is named
        head, bad = "none of the 4 training clips can be used; the first bad one: ", root / "videos"
    else:
        head = "1 of 4 training clips are bad, more than lipreader_train.max_bad_fraction=0 allows (0); the first: "
    assert "\n" not in msg and msg.startswith(head + str(bad)) and msg.endswith(f": {reason}"), msg


def test_script_reports_a_bad_setting_in_one_line(tiny_corpus, tmp_path, capsys):
    code = run_script_in_process("train_lipreader.py", overrides(tiny_corpus, tmp_path, [
        "lipreader_train.ctc_weight=1.0", f"hydra.run.dir={tmp_path / 'hydra'}"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1] == ("error: lipreader_train.ctc_weight=1: the decoder would not be trained "
                                     "(use < 1)")
