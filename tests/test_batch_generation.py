import torch

from dataloaders.batching import collate_clips, length_batches
from pipelines.outputs import ClipOutputs, run_dir
from utils.distributed import shard
from utils.files import atomic_write


def test_shards_are_disjoint_and_complete():
    items = [f"c{i}" for i in range(11)]
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(items)
    assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1:])


def test_length_batches_group_similar_lengths():
    lengths = {"a": 50, "b": 10, "c": 49, "d": 11, "e": 30}
    assert length_batches(lengths, 2) == [["b", "d"], ["e", "c"], ["a"]]


def test_collate_pads_and_keeps_lengths():
    items = [{"id": f"x{n}", "text": "t", "audio": torch.zeros(n * 640), "mouthroi": torch.ones(1, n, 8, 8),
              "face_image": torch.zeros(3, 4, 4), "mel": torch.zeros(80, 4 * n)} for n in (3, 5)]
    b = collate_clips(items)
    assert b["mouthroi"].shape == (2, 1, 5, 8, 8) and b["mel"].shape == (2, 80, 20)
    assert b["lengths"].tolist() == [12, 20] and b["frames"].tolist() == [3, 5]
    assert b["mouthroi"][0, :, 3:].abs().sum() == 0 and torch.all(b["mel"][0, :, 12:] == -1)


def test_output_naming_and_completion(tmp_path):
    d = run_dir(tmp_path, "lrs3", 2.0, 1.5, 270)
    assert d == tmp_path / "generated_mels" / "LRS3" / "w1=2_w2=1.5_asr_start=270"
    out = ClipOutputs(d, "spk/00001")
    assert out.path(".wav") == d / "spk" / "00001.wav"
    assert out.path("_gt.png") == d / "spk" / "00001_gt.png"
    assert not out.is_done()
    for p in out.expected():
        atomic_write(p, lambda tmp: tmp.write_text("x"))
    assert out.is_done()
    assert not ClipOutputs(d, "spk/00001", with_video=True).is_done()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")
    try:
        atomic_write(tmp_path / "a.wav", boom)
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []
