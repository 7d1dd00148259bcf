"""LRS-layout datasets: clip lists, windows, augmentation, test items and bad input."""
import shutil

import numpy as np
import pytest
import torch

from dataloaders.layout import list_split_clips
from dataloaders.lrs_dataset import MelGenTestDataset, MelGenTrainDataset
from dataloaders.samplers import ResumableSampler
from dataloaders.text import normalize_text as clean_transcript, read_transcript
from tests.helpers import TINY_MELGEN, compose_cfg, make_clip
from utils.errors import LipVoicerError


def _cfg(root, extra=()):
    return compose_cfg([f"dataset.root={root}", *TINY_MELGEN, *extra])


def test_split_lists(tiny_corpus):
    cfg = _cfg(tiny_corpus)
    train = list_split_clips(cfg.dataset, "train")
    assert train == ["pretrain/spk0/00001", "pretrain/spk0/00002", "trainval/spk1/00001", "trainval/spk1/00002"]
    assert list_split_clips(cfg.dataset, "test") == ["test/spk2/00001", "test/spk2/00002"]


def test_file_list_sources(tiny_corpus, tmp_path):
    root = tmp_path / "lrs2"
    shutil.copytree(tiny_corpus, root)
    (root / "test.txt").write_text("spk2/00002 NF\n\nspk2/00001\n")
    cfg = compose_cfg(["dataset=lrs2", f"dataset.root={root}", "dataset.splits.test=[{dir: test, list: test.txt}]"])
    assert list_split_clips(cfg.dataset, "test") == ["test/spk2/00001", "test/spk2/00002"]
    cfg = compose_cfg(["dataset=lrs2", f"dataset.root={root}"])
    with pytest.raises(LipVoicerError, match=r"val\.txt: file list of split 'val' not found"):
        list_split_clips(cfg.dataset, "val")


def test_train_window_alignment_and_augmentation(tiny_corpus):
    cfg = _cfg(tiny_corpus)
    ds = MelGenTrainDataset(cfg)
    item = ds[(1, 123)]
    assert item["mel"].shape == (80, 100)
    assert item["mouthroi"].shape == (1, 25, 32, 32)
    assert item["face_image"].shape == (3, 64, 64)
    assert item["mel"].min() >= -1 - 1e-6
    again = ds[(1, 123)]
    for k in item:
        assert torch.equal(item[k], again[k]), k  # same seed, same window and augmentation
    other = ds[(1, 124)]
    assert any(not torch.equal(item[k], other[k]) for k in item)


def test_window_is_aligned_with_the_mel(tiny_corpus, tmp_path):
    """Mouth frames encode their index; the mel window must start at 4x the first frame's index."""
    root = tmp_path / "c"
    make_clip(root, "pretrain/s/a", 60, seed=3)
    crops = np.zeros((60, 96, 96), np.uint8) + np.arange(60, dtype=np.uint8)[:, None, None] * 4
    np.savez(root / "mouth_rois" / "pretrain/s/a.npz", data=crops)
    mel = torch.arange(241, dtype=torch.float32).repeat(80, 1) * 0.01 - 11.5
    torch.save(mel, root / "audios" / "pretrain/s/a.wav.spec")
    cfg = _cfg(root, ["dataset.splits.train=[{dir: pretrain}]", "video.mouth_mean=0", "video.mouth_std=1"])
    ds = MelGenTrainDataset(cfg)
    for seed in range(5):
        it = ds[(0, seed)]
        first_frame = int(round(float(it["mouthroi"][0, 0, 0, 0]) * 255 / 4))
        first_mel = int(round((float(it["mel"][0, 0]) + 1) * (-np.log(1e-5) / 2) / 0.01 + np.log(1e-5) / 0.01 + 1150))
        assert first_mel == 4 * first_frame


def test_short_clip_is_padded(tiny_corpus, tmp_path):
    root = tmp_path / "c"
    make_clip(root, "pretrain/s/short", 12, seed=1)
    ds = MelGenTrainDataset(_cfg(root, ["dataset.splits.train=[{dir: pretrain}]"]))
    it = ds[(0, 0)]
    assert it["mel"].shape == (80, 100) and it["mouthroi"].shape[1] == 25
    assert torch.allclose(it["mel"][:, 60:], torch.tensor(-1.0))


def test_test_items(tiny_corpus):
    ds = MelGenTestDataset(_cfg(tiny_corpus))
    it = ds[1]
    assert it["id"] == "test/spk2/00002"
    assert it["mouthroi"].shape == (1, 36, 32, 32)
    assert it["mel"].shape == (80, 144)
    assert it["audio"].shape == (36 * 640,)
    assert it["text"] == "clip number five"  # digits spelled as words (dataloaders/text.py)


def test_bad_inputs(tiny_corpus, tmp_path):
    with pytest.raises(LipVoicerError, match=r"nowhere/videos: videos directory not found"):
        list_split_clips(_cfg(tmp_path / "nowhere").dataset, "train")
    (tmp_path / "empty" / "videos" / "pretrain").mkdir(parents=True)
    (tmp_path / "empty" / "videos" / "trainval").mkdir(parents=True)
    with pytest.raises(LipVoicerError, match=r"split 'train' of dataset 'LRS3' has no clips"):
        list_split_clips(_cfg(tmp_path / "empty").dataset, "train")
    with pytest.raises(LipVoicerError, match=r"trainval: directory of split 'train' not found"):
        shutil.rmtree(tmp_path / "empty" / "videos" / "trainval")
        list_split_clips(_cfg(tmp_path / "empty").dataset, "train")
    with pytest.raises(LipVoicerError, match=r"has no split 'dev'"):
        list_split_clips(_cfg(tiny_corpus).dataset, "dev")

    root = tmp_path / "mismatch"
    make_clip(root, "pretrain/s/a", 30, seed=1)
    torch.save(torch.zeros(80, 200), root / "audios" / "pretrain/s/a.wav.spec")
    ds = MelGenTrainDataset(_cfg(root, ["dataset.splits.train=[{dir: pretrain}]"]))
    with pytest.raises(LipVoicerError, match=r"a\.npz: mouth crops have 30 frames but .*a\.wav\.spec covers 50 video "
                                             r"frames \(200 mel frames\); they differ by more than one frame"):
        ds[0]

    root = tmp_path / "incomplete"
    make_clip(root, "pretrain/s/a", 30, seed=1)
    (root / "mouth_rois" / "pretrain/s/a.npz").unlink()
    with pytest.raises(LipVoicerError, match=r"no clip of split 'train' has its video, mel \(\.wav\.spec\) and mouth "
                                             r"crops \(\.npz\); 1 incomplete"):
        MelGenTrainDataset(_cfg(root, ["dataset.splits.train=[{dir: pretrain}]"]))


def test_transcripts(tmp_path):
    assert clean_transcript("HELLO {LG} THERE {NS}  World") == "hello there world"
    p = tmp_path / "a.txt"
    p.write_text("Text:  THE CAT {NS}\nConf:  3\n")
    assert read_transcript(p) == "the cat"
    with pytest.raises(LipVoicerError, match=r"b\.txt: transcript not found"):
        read_transcript(tmp_path / "b.txt")


def test_resumable_sampler_is_a_pure_function_of_position():
    full = ResumableSampler(7, seed=3)
    it = iter(full)
    stream = [next(it) for _ in range(20)]
    resumed = iter(ResumableSampler(7, seed=3, start=9))
    assert [next(resumed) for _ in range(11)] == stream[9:]
    assert sorted(i for i, _ in stream[:7]) == list(range(7))  # one epoch visits every item once
    # two ranks see disjoint halves of each epoch
    r0, r1 = iter(ResumableSampler(8, 3, 0, 2)), iter(ResumableSampler(8, 3, 1, 2))
    a, b = {next(r0)[0] for _ in range(4)}, {next(r1)[0] for _ in range(4)}
    assert a.isdisjoint(b) and a | b == set(range(8))


# ----------------------------------------------------------------------------- issue 14: bad clips
def _one_clip(tmp_path, name="c", frames=30):
    root = tmp_path / name
    make_clip(root, "pretrain/s/a", frames, seed=1)
    make_clip(root, "test/s/a", frames, seed=1)
    cfg = _cfg(root, ["dataset.splits.train=[{dir: pretrain}]", "dataset.splits.test=[{dir: test}]"])
    return root, cfg


def _both_raise(cfg, pattern):
    """The training and the test dataset refuse the clip with the same one-line message."""
    for ds, key in ((MelGenTrainDataset(cfg), (0, 1)), (MelGenTestDataset(cfg), 0)):
        with pytest.raises(LipVoicerError, match=pattern) as e:
            ds[key]
        assert "\n" not in str(e.value)


def test_mouth_crops_of_the_wrong_size_or_type_are_refused(tmp_path):
    root, cfg = _one_clip(tmp_path)
    for split in ("pretrain", "test"):
        np.savez(root / "mouth_rois" / split / "s/a.npz", data=np.zeros((30, 20, 20), np.uint8))
    _both_raise(cfg, r"/s/a\.npz: mouth crops are 20 x 20, expected 96 x 96 \(video\.mouth_size\)$")
    for split in ("pretrain", "test"):
        np.savez(root / "mouth_rois" / split / "s/a.npz", data=np.zeros((30, 96, 96), np.float32))
    _both_raise(cfg, r"/s/a\.npz: mouth crops are float32, expected uint8$")
    for split in ("pretrain", "test"):
        np.savez(root / "mouth_rois" / split / "s/a.npz", data=np.zeros((30, 96), np.uint8))
    _both_raise(cfg, r"/s/a\.npz: mouth crops must be \(T, H, W\), got \(30, 96\)$")


def test_truncated_video_crops_disagree_with_the_audio(tmp_path):
    """A video cut to 60 % decodes to fewer crop frames than its (complete) audio: refused, clip named."""
    root, cfg = _one_clip(tmp_path)
    for split in ("pretrain", "test"):
        np.savez(root / "mouth_rois" / split / "s/a.npz", data=np.zeros((18, 96, 96), np.uint8))
    _both_raise(cfg, r"/s/a\.npz: mouth crops have 18 frames but .*/s/a\.wav\.spec covers 30 video frames "
                     r"\(121 mel frames\); they differ by more than one frame$")


def test_garbage_mels_and_crop_files_are_refused(tmp_path):
    root, cfg = _one_clip(tmp_path)
    for split in ("pretrain", "test"):
        torch.save({"not": "a mel"}, root / "audios" / split / "s/a.wav.spec")
    _both_raise(cfg, r"/s/a\.wav\.spec: not a mel file \(holds a dict, expected a tensor\)$")
    for split in ("pretrain", "test"):
        torch.save(torch.full((80, 121), float("nan")), root / "audios" / split / "s/a.wav.spec")
    _both_raise(cfg, r"/s/a\.wav\.spec: mel holds NaN or infinite values$")
    for split in ("pretrain", "test"):
        torch.save(torch.zeros(40, 121), root / "audios" / split / "s/a.wav.spec")
    _both_raise(cfg, r"/s/a\.wav\.spec: mel has 40 bands, expected 80$")
    for split in ("pretrain", "test"):
        (root / "audios" / split / "s/a.wav.spec").write_bytes(b"garbage" * 10)
    _both_raise(cfg, r"/s/a\.wav\.spec: not a readable mel file \(not a saved tensor\)$")
    for split in ("pretrain", "test"):
        (root / "audios" / split / "s/a.wav.spec").write_bytes(b"")
    _both_raise(cfg, r"/s/a\.wav\.spec: not a readable mel file \(the file is empty or cut short\)$")
    for split in ("pretrain", "test"):
        (root / "mouth_rois" / split / "s/a.npz").write_bytes(b"PK\x03\x04 truncated")
    _both_raise(cfg, r"/s/a\.npz: not a readable mouth-crop file \(")


def test_bad_clips_are_replaced_by_the_next_with_the_same_seed(tiny_corpus, tmp_path):
    """trainers.base.SkipBadClips: the item of a bad clip's key is the next clip's with the same seed."""
    from trainers.base import CollateSkipping, SkipBadClips

    root = tmp_path / "c"
    shutil.copytree(tiny_corpus, root)
    bad = root / "mouth_rois" / "pretrain/spk0/00002.npz"
    bad.write_bytes(b"not a zip file")
    ds = MelGenTrainDataset(_cfg(root))
    wrapped = SkipBadClips(ds)
    item, reports = wrapped[(1, 7)]
    assert [(i, r.split(": ")[0]) for i, r in reports] == [(1, str(bad))]
    assert "not a readable mouth-crop file" in reports[0][1]
    for k, v in ds[(2, 7)].items():
        assert torch.equal(item[k], v), k
    good, none = wrapped[(0, 7)]
    assert none == []
    batch, reports = CollateSkipping()([wrapped[(0, 7)], wrapped[(1, 7)]])
    assert batch["mel"].shape == (2, 80, 100) and [i for i, _ in reports] == [1]
    assert SkipBadClips(ds, substitute=False)[(1, 7)][0] is None
