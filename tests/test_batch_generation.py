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


# ----------------------------------------------------------------------------- clip locks (issue 14, item 10)
def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_clip_lock_is_held_by_one_claimant(tmp_path):
    from pipelines.outputs import ClipClaims

    out = ClipOutputs(tmp_path, "spk/00001")
    with ClipClaims() as a, ClipClaims() as b:
        assert a.claim(out)
        assert out.lock_path() == tmp_path / "spk" / ".00001.lock" and out.lock_path().is_file()
        assert not b.claim(out) and not a.claim(out)       # held (by a live pid on this host)
        b.release(out)                                      # not b's: stays
        assert out.lock_path().is_file()
        a.release(out)
        assert not out.lock_path().exists()
        assert b.claim(out)
    assert not out.lock_path().exists()                    # close() releases what is held


def test_stale_locks_are_taken_over(tmp_path, caplog):
    import json
    import os
    import socket
    import time

    from pipelines.outputs import ClipClaims

    out = ClipOutputs(tmp_path, "spk/00001")
    lock = out.lock_path()
    lock.parent.mkdir(parents=True)
    host = socket.gethostname()
    with ClipClaims(stale_seconds=60) as claims:
        # a killed process on this host: its pid is dead
        lock.write_text(json.dumps({"pid": _dead_pid(), "host": host, "token": "old"}))
        assert claims.claim(out) and json.loads(lock.read_text())["pid"] == os.getpid()
        assert "stale lock" in caplog.text and str(lock) in caplog.text
        claims.release(out)
        # another host, refreshed recently: live; not refreshed for longer than stale_seconds: stale
        lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "x"}))
        assert not claims.claim(out)
        old = time.time() - 120
        os.utime(lock, (old, old))
        assert claims.claim(out) and json.loads(lock.read_text())["host"] == host
        claims.release(out)
        # an empty lock (its writer killed between create and write) goes stale by age only
        lock.write_text("")
        assert not claims.claim(out)
        os.utime(lock, (old, old))
        assert claims.claim(out)
    assert not list(tmp_path.rglob(".*"))                  # nothing left: no lock, no moved-aside file


def test_held_locks_are_refreshed(tmp_path):
    import os
    import time

    from pipelines.outputs import ClipClaims

    out = ClipOutputs(tmp_path, "a")
    with ClipClaims(stale_seconds=60, refresh_seconds=0.05) as claims:
        assert claims.claim(out)
        old = time.time() - 50
        os.utime(out.lock_path(), (old, old))
        deadline = time.time() + 5
        while out.lock_path().stat().st_mtime < old + 10 and time.time() < deadline:
            time.sleep(0.05)
        assert out.lock_path().stat().st_mtime > old + 10


def test_stale_temporaries_are_removed_but_not_the_lock(tmp_path):
    from pipelines.split_generation import remove_stale_temporaries

    out = ClipOutputs(tmp_path, "tmp01")            # a name containing "tmp"
    tmp_path.joinpath(".tmp01.wav.ab.tmp.wav").write_text("x")
    tmp_path.joinpath(".tmp01.lock.stale.1.ab").write_text("x")
    out.lock_path().write_text("{}")
    remove_stale_temporaries(out)
    assert [p.name for p in tmp_path.iterdir()] == [".tmp01.lock"]


def test_clip_seed_is_stable():
    """A SHA-256 of the run seed and the clip id: the same in every process and Python version."""
    from pipelines.generation import clip_generator, clip_seed

    assert clip_seed(0, "spk2/00001") == 7879456056558674005
    assert clip_seed(1, "spk2/00001") != clip_seed(0, "spk2/00001") != clip_seed(0, "spk2/00002")
    assert torch.equal(torch.randn(3, generator=clip_generator(0, "a")), torch.randn(3, generator=clip_generator(0, "a")))
