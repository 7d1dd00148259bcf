"""Lip reader (models/vsr, lipread.py): tiny models built from tiny model.json files, CPU only.

The batched beam search is checked against a plain per-hypothesis reference written
here (full decoder/LM recomputation, float64 CTC prefix probabilities), the CTC
prefix scorer against brute-force enumeration of alignments, the cached decoder/LM
steps against full forward passes; plus file/field errors and the script.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REPO_ROOT, compose_cfg
from utils.errors import LipVoicerError

UNITS = ["\u2581HELLO", "\u2581WORLD", "\u2581A", "S", "\u2581LIP", "ING"]  # odim = 1 + 6 + 1 = 8
ODIM = len(UNITS) + 2

TINY_VSR = {
    "adim": 16, "aheads": 2, "eunits": 24, "elayers": 2, "dunits": 24, "dlayers": 2,
    "transformer_input_layer": "conv3d", "transformer_encoder_attn_layer_type": "rel_mha",
    "rel_pos_type": "latest", "macaron_style": 1, "use_cnn_module": 1, "cnn_module_kernel": 5,
    "zero_triu": False, "a_upsample_ratio": 1, "relu_type": "swish", "mtlalpha": 0.3, "ctc_type": "builtin",
    "labels_type": "unigram5000", "char_list": None, "sym_space": "<space>", "sym_blank": "<blank>",
    "dropout_rate": 0.1, "transformer_attn_dropout_rate": 0.1, "lsm_weight": 0.1, "batch_size": 8,
}
TINY_LM = {"layer": 2, "unit": 16, "att_unit": 8, "head": 2, "embed_unit": 8, "pos_enc": "sinusoidal",
           "dropout_rate": 0.0, "model_module": "transformer", "backend": "pytorch"}


def tiny_model(seed=0, eos_bias=0.0):
    from models.vsr.model import VSRModel
    from models.vsr.model_json import parse_vsr_json

    torch.manual_seed(seed)
    m = VSRModel(parse_vsr_json(TINY_VSR), ODIM).eval()
    with torch.no_grad():  # peakier outputs than the default init, so that beams differ
        m.decoder.output_layer.weight.mul_(6.0)
        m.ctc.ctc_lo.weight.mul_(6.0)
        m.decoder.output_layer.bias[m.eos] += eos_bias
    return m


def tiny_lm(seed=1):
    from models.vsr.lm import TransformerLM
    from models.vsr.model_json import parse_lm_json

    torch.manual_seed(seed)
    lm = TransformerLM(ODIM, parse_lm_json(TINY_LM)).eval()
    with torch.no_grad():
        lm.decoder.weight.mul_(4.0)
    return lm


def tiny_crops(n_frames=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n_frames, 96, 96), dtype=np.uint8)


def write_assets(root: Path, seed=0, eos_bias=0.0, with_lm=True):
    """The published layout under a checkpoints dir: model.pth/json, LM model.pth/json, units file."""
    (root / "LRS3_V_WER19.1").mkdir(parents=True, exist_ok=True)
    torch.save(tiny_model(seed, eos_bias).state_dict(), root / "LRS3_V_WER19.1" / "model.pth")
    (root / "LRS3_V_WER19.1" / "model.json").write_text(json.dumps([7744, ODIM, TINY_VSR]))
    (root / "unigram5000_units.txt").write_text("".join(f"{u} {i}\n" for i, u in enumerate(UNITS, 1)),
                                                encoding="utf-8")
    if with_lm:
        (root / "lm_en_subword").mkdir(exist_ok=True)
        torch.save(tiny_lm().state_dict(), root / "lm_en_subword" / "model.pth")
        (root / "lm_en_subword" / "model.json").write_text(json.dumps(TINY_LM))
    return root


def cfg_for(root: Path, *extra):
    return compose_cfg([f"paths.checkpoints_dir={root}", "vsr.beam_size=3", *extra])


# ------------------------------------------------------------------ reference decoding, written plainly
def ref_prefix_forward(logp: np.ndarray, labels: list[int], blank: int = 0):
    """CTC forward variables (r^n_t, r^b_t) of the prefix `labels` (log, float64)."""
    T = logp.shape[0]
    rn = np.full(T, -np.inf)
    rb = np.cumsum(logp[:, blank])
    prev = None
    for n_done, c in enumerate(labels):
        phi = rb.copy() if c == prev else np.logaddexp(rn, rb)
        new_n, new_b = np.full(T, -np.inf), np.full(T, -np.inf)
        if n_done == 0:
            new_n[0] = logp[0, c]
        for t in range(1, T):
            new_n[t] = np.logaddexp(new_n[t - 1], phi[t - 1]) + logp[t, c]
            new_b[t] = np.logaddexp(new_n[t - 1], new_b[t - 1]) + logp[t, blank]
        rn, rb, prev = new_n, new_b, c
    return rn, rb


def ref_prefix_logprob(logp: np.ndarray, g: list[int], c: int, eos: int) -> float:
    """log psi(g + c); for c = eos the probability of exactly g."""
    rn, rb = ref_prefix_forward(logp, g)
    if c == eos:
        return float(np.logaddexp(rn[-1], rb[-1]))
    phi = rb if (g and g[-1] == c) else np.logaddexp(rn, rb)
    psi = logp[0, c] if not g else -np.inf
    for t in range(1, logp.shape[0]):
        psi = np.logaddexp(psi, phi[t - 1] + logp[t, c])
    return float(psi)


def ref_end_detect(ended, i):
    if not ended:
        return False
    best = max(s for _, s in ended)
    hits = 0
    for m in range(3):
        same = [s for y, s in ended if len(y) == i - m]
        hits += bool(same) and max(same) - best < -10
    return hits == 3


def reference_search(model, lm, enc, beam, ctc_w, lm_w):
    V, sos, eos = model.odim, model.sos, model.eos
    T = enc.size(0)
    logp = model.ctc.log_softmax(enc[None])[0].detach().double().numpy()
    pre = int(1.5 * beam)
    running, ended = [([sos], 0.0, 0.0)], []  # (yseq, score, log psi of the prefix)
    for i in range(T):
        cands = []
        for y, score, psi_g in running:
            ys = torch.tensor([y])
            with torch.no_grad():
                dec = model.decoder(ys, enc[None])[0, -1].double()
                total = (1 - ctc_w) * dec
                if lm is not None and lm_w:
                    total = total + lm_w * lm(ys)[0, -1].double()
            cand_ids = (set(torch.topk(dec, pre).indices.tolist()) | {eos}) - {model.blank}
            for c in cand_ids:
                psi = ref_prefix_logprob(logp, y[1:], c, eos)
                cands.append((score + float(total[c]) + ctc_w * (psi - psi_g), y + [c], psi))
        cands.sort(key=lambda x: -x[0])
        running = []
        for s, y, psi in cands[:beam]:
            if i == T - 1:
                y = y + [eos]
            if y[-1] == eos:
                ended.append((y, s))
            else:
                running.append((y, s, psi))
        if ref_end_detect(ended, i) or not running:
            break
    return sorted(ended, key=lambda e: -e[1])


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("eos_bias,lm_w,method", [(0.0, 0.0, "loop"), (0.0, 0.5, "loop"), (4.0, 0.3, "loop"),
                                                  (0.0, 0.5, "scan"), (4.0, 0.3, "scan")])
def test_batched_beam_search_matches_reference(eos_bias, lm_w, method):
    from models.vsr.beam_search import BeamSearch
    from models.vsr.reader import preprocess_mouth_crops

    torch.set_num_threads(1)
    model, lm = tiny_model(3, eos_bias), tiny_lm()
    with torch.no_grad():
        enc = model.encode(preprocess_mouth_crops(tiny_crops(9, seed=4)))
    got = BeamSearch(model, lm, beam_size=3, ctc_weight=0.3, lm_weight=lm_w, ctc_method=method)(enc)
    ref = reference_search(model, lm, enc, beam=3, ctc_w=0.3, lm_w=lm_w)
    # hypotheses CTC cannot emit in so few frames (log zero) are ranked arbitrarily: compare the others
    got = [h for h in got if float(h.score) > -1e8]
    ref = [r for r in ref if r[1] > -1e8]
    assert len(got) >= 3
    assert [h.yseq for h in got] == [y for y, _ in ref]
    np.testing.assert_allclose([float(h.score) for h in got], [s for _, s in ref], rtol=1e-4, atol=1e-4)
    assert got[0].yseq[0] == model.sos and got[0].yseq[-1] == model.eos
    if eos_bias:
        assert len(got[0].yseq) < enc.size(0) + 2  # some hypotheses finished before the length limit


@pytest.mark.parametrize("method", ["loop", "scan"])
def test_ctc_prefix_scores_match_brute_force(method):
    from models.vsr.ctc import CTCPrefixScorer

    T, V, eos = 5, 4, 3
    logp = torch.log_softmax(torch.randn(T, V, generator=torch.Generator().manual_seed(0)) * 2, -1)

    def collapse(path):
        out = [k for k, _ in itertools.groupby(path)]
        return [k for k in out if k != 0]

    def brute(h, exact=False):
        tot = 0.0
        for path in itertools.product(range(V), repeat=T):
            seq = collapse(path)
            if (seq == h) if exact else (seq[:len(h)] == h):
                tot += math.exp(sum(float(logp[t, k]) for t, k in enumerate(path)))
        return math.log(tot) if tot > 0 else -math.inf

    scorer = CTCPrefixScorer(logp, blank=0, eos=eos)
    for g in ([], [1], [1, 1], [2, 1], [1, 2, 1]):
        r, s = scorer.initial_state()
        y = [eos]
        for c in g:  # walk the prefix token by token, as the beam search does
            _, r_all, log_psi = scorer.score(torch.tensor([y[-1]]), len(y) - 1, r, s, None, method)
            r, s = scorer.select(r_all, log_psi, None, torch.tensor([0]), torch.tensor([c]))
            y.append(c)
        inc, _, log_psi = scorer.score(torch.tensor([y[-1]]), len(y) - 1, r, s, None, method)
        for c in (1, 2):
            want = brute(g + [c])
            if want == -math.inf:
                assert float(log_psi[0, c]) < -1e9
            else:
                assert float(log_psi[0, c]) == pytest.approx(want, abs=1e-4)
        assert float(log_psi[0, eos]) == pytest.approx(brute(g, exact=True), abs=1e-4)
        assert float(log_psi[0, 0]) < -1e9  # blank is never proposed
        assert torch.allclose(inc, log_psi - s.unsqueeze(1))


def test_cached_decoder_and_lm_steps_match_full_forward():
    model, lm = tiny_model(5), tiny_lm(6)
    torch.manual_seed(7)
    mem = torch.randn(1, 11, TINY_VSR["adim"])
    ys = torch.cat([torch.full((3, 1), model.sos), torch.randint(1, ODIM - 1, (3, 5))], dim=1)
    with torch.no_grad():
        full_dec, full_lm = model.decoder(ys, mem.expand(3, -1, -1)), lm(ys)
        mem_kv, dc, lc = model.decoder.memory_kv(mem), None, None
        for L in range(1, ys.size(1) + 1):
            d, dc = model.decoder.step(ys[:, :L], dc, mem_kv)
            m, lc = lm.step(ys[:, :L], lc)
            torch.testing.assert_close(d, full_dec[:, L - 1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(m, full_lm[:, L - 1], rtol=1e-5, atol=1e-5)


def test_load_lip_reader_end_to_end(tmp_path):
    from models.vsr.reader import load_lip_reader, preprocess_mouth_crops

    torch.set_num_threads(1)
    root = write_assets(tmp_path / "ckpt", seed=2, eos_bias=2.0)
    reader = load_lip_reader(cfg_for(root))
    assert reader.lm is not None and len(reader.tokens) == ODIM
    assert reader.tokens.tokens[1] == UNITS[0] and reader.tokens.tokens[-1] == "<eos>"
    crops = tiny_crops(10, seed=1)
    text = reader.read(crops, "cpu")
    with torch.no_grad():
        enc = reader.model.encode(preprocess_mouth_crops(crops))
    ref = reference_search(reader.model, reader.lm, enc, beam=3, ctc_w=0.1, lm_w=0.3)
    assert text == reader.tokens.text(ref[0][0])
    assert text == text.lower() and text == " ".join(text.split())
    assert all(re.fullmatch("(hello|world|a|s|lip|ing)+", w) for w in text.split()), text
    assert reader.read(crops) == text  # deterministic


def test_lm_weight_zero_needs_no_lm_files(tmp_path):
    from models.vsr.reader import load_lip_reader

    root = write_assets(tmp_path / "ckpt", with_lm=False)
    reader = load_lip_reader(cfg_for(root, "vsr.lm_weight=0"))
    assert reader.lm is None and isinstance(reader.read(tiny_crops(6)), str)


@pytest.mark.parametrize("override,reason", [("vsr.beam_size=0", "beam_size"), ("vsr.ctc_weight=1.5", "ctc_weight")])
def test_bad_decoding_settings_are_user_errors(tmp_path, override, reason):
    from models.vsr.reader import load_lip_reader

    root = write_assets(tmp_path / "ckpt", with_lm=False)
    with pytest.raises(LipVoicerError, match=reason):
        load_lip_reader(cfg_for(root, "vsr.lm_weight=0", override))


@pytest.mark.parametrize("missing,asset", [
    ("LRS3_V_WER19.1/model.json", "vsr_lrs3"), ("LRS3_V_WER19.1/model.pth", "vsr_lrs3"),
    ("unigram5000_units.txt", "vsr_units"), ("lm_en_subword/model.pth", "vsr_lm"),
    ("lm_en_subword/model.json", "vsr_lm"),
])
def test_missing_file_names_file_and_download_command(tmp_path, missing, asset):
    from models.vsr.reader import load_lip_reader

    root = write_assets(tmp_path / "ckpt")
    (root / missing).unlink()
    with pytest.raises(LipVoicerError) as e:
        load_lip_reader(cfg_for(root))
    msg = str(e.value)
    assert str(root / missing) in msg and f"python download_checkpoints.py --only {asset}" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("field,value", [
    ("transformer_input_layer", "conv1d"), ("transformer_encoder_attn_layer_type", "legacy_rel_mha"),
    ("rel_pos_type", "legacy"), ("rel_pos_type", None), ("relu_type", "gelu"), ("macaron_style", "maybe"),
    ("adim", -16), ("aheads", 3), ("labels_type", "bpe"), ("a_upsample_ratio", 4), ("mtlalpha", 1.5),
    ("ctc_type", "fancy"), ("cnn_module_kernel", 4), ("elayers", "12"),
])
def test_bad_model_json_field_is_named(tmp_path, field, value):
    from models.vsr.reader import load_vsr_model

    conf = dict(TINY_VSR, **{field: value})
    path = tmp_path / "model.json"
    path.write_text(json.dumps([7744, ODIM, conf]))
    with pytest.raises(LipVoicerError) as e:
        load_vsr_model(tmp_path / "absent.pth", path, tmp_path / "absent_units.txt")
    assert f"'{field}'" in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("field,value", [("model_module", "default"), ("pos_enc", "learned"), ("head", 3),
                                         ("layer", 0), ("tie_weights", "sometimes")])
def test_bad_lm_json_field_is_named(tmp_path, field, value):
    from models.vsr.reader import load_lm

    path = tmp_path / "lm.json"
    path.write_text(json.dumps(dict(TINY_LM, **{field: value})))
    with pytest.raises(LipVoicerError) as e:
        load_lm(tmp_path / "absent.pth", path, ODIM)
    assert f"'{field}'" in str(e.value) and str(path) in str(e.value)


def test_missing_model_json_field_is_named():
    from models.vsr.model_json import parse_vsr_json

    conf = {k: v for k, v in TINY_VSR.items() if k != "dunits"}
    with pytest.raises(LipVoicerError, match="'dunits' is missing"):
        parse_vsr_json(conf, "x/model.json")


def test_strict_loading_names_keys(tmp_path):
    from models.vsr.reader import load_lm, load_vsr_model
    from models.vsr.tokens import TokenList

    tokens = TokenList(["<blank>", *UNITS, "<eos>"])
    sd = tiny_model().state_dict()
    sd["encoder.extra.weight"] = torch.zeros(1)
    del sd["encoder.encoders.1.norm_final.bias"]
    with pytest.raises(LipVoicerError) as e:
        load_vsr_model(sd, TINY_VSR, tokens)
    assert "encoder.extra.weight" in str(e.value) and "encoder.encoders.1.norm_final.bias" in str(e.value)
    with pytest.raises(LipVoicerError, match="output tokens"):
        load_vsr_model(tiny_model().state_dict(), TINY_VSR, TokenList(["<blank>", "a", "<eos>"]))
    lm_sd = tiny_lm().state_dict()
    lm_sd.pop("encoder.embed.1.weight")
    with pytest.raises(LipVoicerError, match="encoder.embed.1.weight"):
        load_lm(lm_sd, TINY_LM, ODIM)


def test_preprocessing_centre_crop_and_normalisation():
    from models.vsr.reader import preprocess_mouth_crops

    crops = np.zeros((3, 96, 96), dtype=np.uint8)
    crops[:, 4, 4] = 255      # first pixel inside the centre 88x88 crop
    crops[:, 3, 3] = 255      # outside it
    x = preprocess_mouth_crops(crops, 88, 0.421, 0.165)
    assert x.shape == (1, 3, 88, 88) and x.dtype == torch.float32
    assert float(x[0, 0, 0, 0]) == pytest.approx((1.0 - 0.421) / 0.165)
    assert float(x[0, 0, 1, 1]) == pytest.approx((0.0 - 0.421) / 0.165)
    assert torch.all(x[0, :, 1:, 1:] == x[0, 0, 1, 1])


@pytest.mark.parametrize("make,reason", [
    (lambda p: np.savez(p, frames=np.zeros((4, 96, 96), np.uint8)), "no 'data'"),
    (lambda p: np.savez(p, data=np.zeros((4, 96, 96), np.float32)), "uint8"),
    (lambda p: np.savez(p, data=np.zeros((4, 50, 50), np.uint8)), "smaller than"),
    (lambda p: np.savez(p, data=np.zeros((96, 96), np.uint8)), "(T, H, W)"),
    (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz"),
])
def test_bad_mouth_crops_are_user_errors(tmp_path, make, reason):
    from models.vsr.reader import load_mouth_npz, preprocess_mouth_crops

    path = tmp_path / "clip.npz"
    make(path)
    with pytest.raises(LipVoicerError) as e:
        preprocess_mouth_crops(load_mouth_npz(path), source=str(path))
    assert reason in str(e.value) and str(path) in str(e.value)


def test_token_text():
    from models.vsr.tokens import TokenList

    t = TokenList(["<blank>", *UNITS, "<eos>"])
    eos = t.eos
    assert t.raw_text([eos, 5, 6, 1, 4, eos]) == "LIPING HELLOS"
    assert t.text([eos, 5, 6, 1, 4, eos]) == "liping hellos"
    assert t.text([eos, eos]) == ""


def _run_lipread(args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "lipread.py", *args, f"hydra.run.dir={tmp_path / 'hydra'}",
                           "hydra.output_subdir=null"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_lipread_script(tmp_path):
    from models.vsr.reader import load_lip_reader

    root = write_assets(tmp_path / "ckpt", seed=2, eos_bias=2.0)
    crops = tiny_crops(8, seed=5)
    np.savez(tmp_path / "clip.npz", data=crops)
    proc = _run_lipread([str(tmp_path / "clip.npz"), f"paths.checkpoints_dir={root}", "vsr.beam_size=3",
                         "vsr.device=cpu"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == load_lip_reader(cfg_for(root)).read(crops)

    bad = _run_lipread([str(tmp_path / "nothing.npz"), f"paths.checkpoints_dir={root}"], tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nothing.npz'}: file not found"


def test_video_input_goes_through_mouth_cropping(tmp_path, monkeypatch):
    import types

    from lipread import lipread
    from models.vsr.reader import load_lip_reader

    root = write_assets(tmp_path / "ckpt", seed=2, eos_bias=2.0)
    crops, seen = tiny_crops(7, seed=9), []

    def fake_crops(path, cfg):
        seen.append(path)
        return crops

    monkeypatch.setitem(sys.modules, "dataloaders.prep.mouthcrops",
                        types.SimpleNamespace(mouth_crops_from_video=fake_crops))
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"\x00")
    cfg = cfg_for(root, f"vsr.input={video}", "vsr.device=cpu")
    assert lipread(cfg) == load_lip_reader(cfg).read(crops) and seen == [str(video)]


def test_video_input_without_mouth_cropping_is_a_clear_error(tmp_path, monkeypatch):
    from lipread import mouth_crops_for

    monkeypatch.setitem(sys.modules, "dataloaders.prep.mouthcrops", None)  # import fails
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00")
    with pytest.raises(LipVoicerError, match="mouth cropping from a video is not available"):
        mouth_crops_for(video, None)
