"""SyncNet parity with the original syncnet_python (fixture syncnet.pt in the parity folder).

The stand-in weights are written as the published syncnet_v2.model is (a plain state dict with the
network's own keys) and loaded through models/syncnet.load_syncnet (strict). The forward case compares
both branches' embeddings and the lip trunk's features; each whole-clip case runs the project's scorer
(pipelines/sync_scores.py) on the fixture's face crops and audio, the audio written to a 16-bit wav and read
back as the evaluation reads it, and compares the MFCCs, the per-window distances, their mean, LSE-D
(min_dist) and LSE-C (conf) with the notes' tolerances (features rel_err <= 1e-4; conf and min_dist within
1e-2; the offset where the fixture's offset_margin is at least 1e-2, else the offset we pick must be a
minimum within 1e-2).
"""
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.parity_utils import check_cases, det_state_dict, load_fixture, rel_err

ABS_TOL = 1e-2      # conf (LSE-C) and min_dist (LSE-D), from the fixture's notes
FEATURE_TOL = 1e-4


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("syncnet.pt")


def _weights_file(fx, folder, state_dict=None):
    path = folder / "syncnet_v2.model"
    torch.save(state_dict if state_dict is not None else det_state_dict(fx["manifest"], fx["constants"]), path)
    return path


def _forward_run(net):
    @torch.no_grad()
    def run(inp):
        if "lip_uint8" not in inp:
            return {}
        lips = inp["lip_uint8"].float()
        return {"lip": net.lip_embedding(lips), "aud": net.audio_embedding(inp["aud"]), "lipfeat": net.lip_features(lips)}
    return run


def test_syncnet_forward_parity(fixture, tmp_path):
    from models.syncnet import load_syncnet

    net = load_syncnet(_weights_file(fixture, tmp_path))
    forward = {**fixture, "cases": [c for c in fixture["cases"] if "lip_uint8" in c["inputs"]]}
    assert forward["cases"], "the fixture has no forward case"
    failures = check_cases(forward, _forward_run(net), tol={}, default_tol=FEATURE_TOL)
    assert not failures, "\n".join(failures)


def test_syncnet_parity_detects_one_wrong_tensor(fixture, tmp_path):
    from models.syncnet import load_syncnet

    sd = det_state_dict(fixture["manifest"], fixture["constants"])
    sd["netfcaud.3.weight"] = sd["netfcaud.3.weight"] * 1.01
    net = load_syncnet(_weights_file(fixture, tmp_path, sd))
    forward = {**fixture, "cases": [c for c in fixture["cases"] if "lip_uint8" in c["inputs"]]}
    failures = check_cases(forward, _forward_run(net), tol={}, default_tol=FEATURE_TOL)
    assert any("aud" in f for f in failures) and not any("lip" in f for f in failures)


def test_syncnet_clip_scores_parity(fixture, tmp_path):
    from dataloaders.mfcc import read_wav_int16
    from models.syncnet import load_syncnet
    from pipelines.sync_scores import SyncScorer

    net = load_syncnet(_weights_file(fixture, tmp_path))
    cases = [c for c in fixture["cases"] if "frames_bgr" in c["inputs"]]
    assert len(cases) == 3, "the fixture should hold three whole clips"
    failures = []
    for k, case in enumerate(cases):
        inp, ref = case["inputs"], case["outputs"]
        wav = tmp_path / f"clip{k}.wav"
        sf.write(wav, inp["audio_int16"].numpy(), 16000, subtype="PCM_16")
        samples = read_wav_int16(wav)
        assert np.array_equal(samples, inp["audio_int16"].numpy())
        scorer = SyncScorer(net, "cpu", vshift=int(inp["vshift"]), batch_size=int(inp["batch_size"]))
        got = scorer.score(inp["frames_bgr"].numpy(), samples, source=str(wav))
        for key, value in (("mfcc", got.mfcc), ("dists", got.dists), ("mean_dists", got.mean_dists)):
            value = torch.from_numpy(np.asarray(value))
            if tuple(value.shape) != tuple(ref[key].shape):
                failures.append(f"case {k} {key}: shape {tuple(value.shape)} != {tuple(ref[key].shape)}")
                continue
            err = rel_err(value, ref[key])
            print(f"[parity] syncnet clip {k} {key}: rel_err={err:.3e}")
            if not err <= FEATURE_TOL:
                failures.append(f"case {k} {key}: rel_err {err:.3e}")
        for ours, theirs in ((got.lse_c, "conf"), (got.lse_d, "min_dist")):
            diff = abs(ours - float(ref[theirs]))
            print(f"[parity] syncnet clip {k} {theirs}: {ours:.4f} vs {float(ref[theirs]):.4f} (abs {diff:.2e})")
            if not diff <= ABS_TOL:
                failures.append(f"case {k} {theirs}: {ours} vs {float(ref[theirs])}")
        if float(ref["offset_margin"]) >= ABS_TOL:
            if got.offset != int(ref["offset"]):
                failures.append(f"case {k} offset: {got.offset} vs {int(ref['offset'])}")
        else:  # a near-tie: the offset we pick must be one of the minima
            at = float(ref["mean_dists"][int(inp["vshift"]) - got.offset])
            if not at - float(ref["min_dist"]) <= ABS_TOL:
                failures.append(f"case {k} offset {got.offset}: not a minimum of the reference distances")
        assert math.isfinite(got.offset_margin)
    assert not failures, "\n".join(failures)
