"""download_checkpoints.py and utils/assets.py with the network replaced."""
from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import download_checkpoints as dl
from utils.assets import (asset_path, asset_table, check_asset, fetch_command, missing_asset_error,
                          require_asset)
from utils.errors import LipVoicerError


# ------------------------------------------------------------------ payloads the fake network serves
def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


TABLE = {
    "melgen": dict(description="MelGen", source="gdrive", id="ID_MELGEN", root="workdir",
                   path="exp/LRS3/w/checkpoint/1000000.pkl", check="torch"),
    "voc": dict(description="vocoder", source="gdrive", id="ID_VOC", root="checkpoints", path="g_02400000",
                check="torch"),
    "lm": dict(description="arpa", source="gdrive", id="ID_LM", path="6gram.arpa", check="arpa"),
    "tok": dict(description="spm", source="gdrive", id="ID_TOK", path="tok.model", check="spm"),
    "vsr": dict(description="lip reader", source="gdrive", id="ID_VSR", path="LRS3_V_WER19.1", unpack=True,
                check="files", members=["model.pth", "model.json"]),
    "face": dict(description="mean face", source="url", url="https://example.invalid/face.npy",
                 path="20words_mean_face.npy", check="npy", shape=[68, 2]),
    "units": dict(description="units", source="url", url="https://example.invalid/units.txt",
                  path="units.txt", check="lines", lines=3),
    "extra": dict(description="benchmark", source="gdrive", id="ID_EXTRA", path="texts/LRS2", unpack=True,
                  check="files", members=[], default=False),
}

PAYLOADS = {
    "ID_MELGEN": torch_bytes({"model_state_dict": {"w": torch.ones(3)}}),
    "ID_VOC": torch_bytes({"generator": {"conv_pre.bias": torch.zeros(2)}}),
    "ID_LM": b"\n\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0 a\n-1.0 b\n\n\\end\\\n",
    "ID_TOK": b"\x0a\x05\x0a\x03abc",
    "ID_VSR": zip_bytes({"LRS3_V_WER19.1/model.pth": torch_bytes({"a": torch.zeros(1)}),
                         "LRS3_V_WER19.1/model.json": json.dumps({"adim": 768}).encode()}),
    "ID_EXTRA": zip_bytes({"a/00001.txt": b"hello"}),
    "https://example.invalid/face.npy": npy_bytes(np.zeros((68, 2))),
    "https://example.invalid/units.txt": b"<unk> 1\nA 2\nB 3\n",
}

QUOTA = ("Failed to retrieve file url: Too many users have viewed or downloaded this file recently. Please try "
         "accessing the file again later.")


class FakeNet:
    """Replaces download_gdrive / download_url; records calls; can fail or serve other bytes per key."""

    def __init__(self, monkeypatch):
        self.calls = []
        self.payloads = dict(PAYLOADS)
        self.errors = {}
        monkeypatch.setattr(dl, "download_gdrive", lambda file_id, out: self._serve(file_id, out))
        monkeypatch.setattr(dl, "download_url", lambda url, out: self._serve(url, out))

    def _serve(self, key, out):
        self.calls.append(key)
        out = Path(out)
        if key in self.errors:
            # what gdown leaves behind on failure: a partial file next to the output, never the output
            (out.parent / (out.name + "abcdefgh.part")).write_bytes(b"partial")
            raise self.errors[key]
        out.write_bytes(self.payloads[key])


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"paths": {"checkpoints_dir": "ck"}, "assets": TABLE})
    return cfg, FakeNet(monkeypatch), tmp_path


def args(*a):
    return dl.parse_args(list(a))


def run(cfg, *a):
    out, err = io.StringIO(), io.StringIO()
    rc = dl.run(cfg, args(*a), out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def leftovers(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith((".download", ".unpacking", ".old")))


# ------------------------------------------------------------------ fetching
def test_fetches_every_default_asset_to_its_place(env):
    cfg, net, root = env
    rc, out, err = run(cfg)
    assert rc == 0, err
    assert sorted(net.calls) == sorted(k for k in PAYLOADS if k != "ID_EXTRA")  # non-default not fetched
    assert (root / "exp/LRS3/w/checkpoint/1000000.pkl").is_file()  # workdir-rooted: where ckpt_path points
    assert torch.load(root / "ck/g_02400000", weights_only=False)["generator"]["conv_pre.bias"].shape == (2,)
    assert (root / "ck/LRS3_V_WER19.1/model.pth").is_file()
    assert json.loads((root / "ck/LRS3_V_WER19.1/model.json").read_text()) == {"adim": 768}
    assert not (root / "ck/LRS3_V_WER19.1.zip.download").exists()  # the archive is removed once unpacked
    assert np.load(root / "ck/20words_mean_face.npy").shape == (68, 2)
    assert leftovers(root) == []
    for name in TABLE:
        if name != "extra":
            assert check_asset(cfg, name) is None, name


def test_skips_assets_already_present(env):
    cfg, net, root = env
    assert run(cfg)[0] == 0
    net.calls.clear()
    rc, out, _ = run(cfg)
    assert rc == 0 and net.calls == []
    assert "present" in out and "downloaded" not in out
    net.calls.clear()
    assert run(cfg, "--only", "voc", "--force")[0] == 0
    assert net.calls == ["ID_VOC"]


def test_incomplete_file_is_fetched_again(env):
    cfg, net, root = env
    target = root / "ck/g_02400000"
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOADS["ID_VOC"][:-40])  # truncated zip-format checkpoint
    assert "truncated" in check_asset(cfg, "voc")
    rc, out, _ = run(cfg, "--only", "voc")
    assert rc == 0 and net.calls == ["ID_VOC"]
    assert "incomplete" in out
    assert check_asset(cfg, "voc") is None


def test_only_fetches_named_assets(env):
    cfg, net, root = env
    rc, out, _ = run(cfg, "--only", "voc", "extra", "voc")
    assert rc == 0
    assert net.calls == ["ID_VOC", "ID_EXTRA"]
    assert (root / "ck/texts/LRS2/a/00001.txt").is_file()  # a top folder of another name is kept
    assert "melgen" not in out


def test_all_includes_non_default_assets(env):
    cfg, net, _ = env
    assert run(cfg, "--all")[0] == 0
    assert "ID_EXTRA" in net.calls


def test_unknown_asset_name_is_an_error(env, monkeypatch, capsys):
    cfg, net, _ = env
    with pytest.raises(LipVoicerError, match=r"unknown asset 'nope'; known assets: melgen, voc"):
        run(cfg, "--only", "voc", "nope")
    assert net.calls == []
    monkeypatch.setattr(dl, "load_config", lambda: cfg)
    with pytest.raises(SystemExit) as e:
        dl.main(["--only", "nope"])
    assert e.value.code == 1
    assert capsys.readouterr().err.startswith("error: unknown asset 'nope'")


def test_failed_download_leaves_no_file_under_the_final_name(env):
    cfg, net, root = env
    net.errors["ID_VOC"] = RuntimeError(QUOTA)
    rc, out, err = run(cfg, "--only", "voc", "lm")
    assert rc == 1
    assert not (root / "ck/g_02400000").exists()
    assert not (root / "ck/g_02400000.download").exists()
    assert (root / "ck/6gram.arpa").is_file()  # the others still go through
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: voc: Google Drive refused: the file's download quota is exceeded")
    assert "https://drive.google.com/uc?id=ID_VOC" in lines[0] and str(Path("ck/g_02400000")) in lines[0]
    assert lines[1] == "error: 1 of 2 assets failed; see docs/checkpoints.md (manual download and placement)"
    assert "FAILED" in out


def test_web_page_instead_of_file_is_rejected(env):
    cfg, net, root = env
    net.payloads["ID_VOC"] = b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>"
    rc, _, err = run(cfg, "--only", "voc")
    assert rc == 1
    assert "web page, not the file" in err
    assert not (root / "ck/g_02400000").exists() and leftovers(root) == []


def test_wrong_content_fails_the_check(env):
    cfg, net, root = env
    net.payloads["https://example.invalid/units.txt"] = b"<unk> 1\nA 2\n"
    net.payloads["ID_LM"] = b"\\data\\\nngram 1=2\n"  # cut before \end\
    rc, _, err = run(cfg, "--only", "units", "lm")
    assert rc == 1
    assert "error: units: the downloaded file fails the check: 2 lines, expected 3" in err
    assert "error: lm: the downloaded file fails the check: truncated (no \\end\\ line at the end)" in err
    assert not (root / "ck/units.txt").exists() and not (root / "ck/6gram.arpa").exists()


def test_zip_without_top_folder_and_bad_zips(env):
    cfg, net, root = env
    net.payloads["ID_VSR"] = zip_bytes({"model.pth": torch_bytes({}), "model.json": b"{}"})
    assert run(cfg, "--only", "vsr")[0] == 0
    assert (root / "ck/LRS3_V_WER19.1/model.json").is_file()

    net.payloads["ID_VSR"] = zip_bytes({"LRS3_V_WER19.1/model.json": b"{}"})  # model.pth absent
    rc, _, err = run(cfg, "--only", "vsr", "--force")
    assert rc == 1 and "the archive's contents fail the check: model.pth not found" in err
    assert (root / "ck/LRS3_V_WER19.1/model.pth").is_file()  # the complete copy was kept

    net.payloads["ID_EXTRA"] = b"not a zip"
    rc, _, err = run(cfg, "--only", "extra")
    assert rc == 1 and "error: extra: the download is not a zip archive" in err
    assert not (root / "ck/texts/LRS2").exists() and leftovers(root) == []


def test_finished_download_of_an_earlier_run_is_used(env):
    cfg, net, root = env
    staging = root / "ck/g_02400000.download"
    staging.parent.mkdir(parents=True)
    staging.write_bytes(PAYLOADS["ID_VOC"])
    assert run(cfg, "--only", "voc")[0] == 0
    assert net.calls == [] and (root / "ck/g_02400000").is_file() and not staging.exists()


def test_dest_moves_checkpoint_assets_only(env):
    cfg, net, root = env
    assert run(cfg, "--only", "voc", "melgen", "--dest", str(root / "elsewhere"))[0] == 0
    assert (root / "elsewhere/g_02400000").is_file()
    assert (root / "exp/LRS3/w/checkpoint/1000000.pkl").is_file()


def test_list_shows_presence_and_fetches_nothing(env):
    cfg, net, root = env
    run(cfg, "--only", "voc")
    (root / "ck/tok.model").write_bytes(b"garbage")
    net.calls.clear()
    rc, out, _ = run(cfg, "--list")
    assert rc == 0 and net.calls == []
    rows = {ln.split()[0]: ln.split()[1] for ln in out.splitlines()[2:2 + len(TABLE)]}
    assert rows["voc"] == "present" and rows["melgen"] == "missing" and rows["tok"] == "incomplete"
    assert "tok: incomplete (not a SentencePiece model); fetch it again with: " \
           "python download_checkpoints.py --only tok --dest ck" in out


def test_final_table_format():
    rows = [dl.Result("voc", "downloaded", Path(__file__)), dl.Result("lm", "FAILED", Path("ck/x.arpa"), "why")]
    text = dl.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["asset", "status", "size", "path"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split()[:2] == ["voc", "downloaded"] and lines[2].split()[3] == "KB"
    assert lines[3].split() == ["lm", "FAILED", "-", "ck/x.arpa"]


# ------------------------------------------------------------------ failure messages and the real fetchers
def test_explain_failure_lines():
    assert dl.explain_failure(RuntimeError(QUOTA)).startswith("Google Drive refused: the file's download quota")

    class FileURLRetrievalError(Exception):
        pass

    assert "refused the link" in dl.explain_failure(FileURLRetrievalError("Cannot retrieve the public link"))
    assert dl.explain_failure(ConnectionError("no route")).startswith("network or file error (ConnectionError")
    assert dl.explain_failure(ValueError("a\nb")) == "ValueError: a b"


def test_download_gdrive_calls_gdown_resumably(tmp_path, monkeypatch):
    gdown = pytest.importorskip("gdown")
    seen = {}

    def fake_download(**kw):
        seen.update(kw)
        Path(kw["output"]).write_bytes(b"x")
        return kw["output"]

    monkeypatch.setattr(gdown, "download", fake_download)
    dl.download_gdrive("ABC", tmp_path / "f.download")
    assert seen["id"] == "ABC" and seen["resume"] is True and seen["output"] == str(tmp_path / "f.download")
    assert seen["timeout"] == 60

    monkeypatch.setattr(gdown, "download", lambda **kw: None)
    with pytest.raises(dl.DownloadFailed, match="without writing the file"):
        dl.download_gdrive("ABC", tmp_path / "g.download")


def test_gdown_quota_exception_is_explained(tmp_path, monkeypatch):
    gdown = pytest.importorskip("gdown")
    from gdown.exceptions import FileURLRetrievalError

    def refuse(**kw):
        raise FileURLRetrievalError(QUOTA)

    monkeypatch.setattr(gdown, "download", refuse)
    with pytest.raises(FileURLRetrievalError) as e:
        dl.download_gdrive("ABC", tmp_path / "f.download")
    assert "download quota is exceeded" in dl.explain_failure(e.value)


def test_download_url_writes_via_part_file(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("a 1\n")
    out = tmp_path / "units.txt.download"
    dl.download_url(src.as_uri(), out)
    assert out.read_text() == "a 1\n" and not (tmp_path / "units.txt.download.part").exists()
    with pytest.raises(OSError):
        dl.download_url((tmp_path / "absent").as_uri(), tmp_path / "x.download")
    assert not (tmp_path / "x.download").exists() and not (tmp_path / "x.download.part").exists()


# ------------------------------------------------------------------ messages for the inference scripts
def test_missing_asset_error_names_file_and_command(env):
    cfg, _, root = env
    e = missing_asset_error(cfg, "voc")
    assert str(e) == f"{Path('ck/g_02400000')}: not found; fetch it with: python download_checkpoints.py " \
                     f"--only voc --dest ck"
    # by path, also a file inside an unpacked folder
    assert str(missing_asset_error(cfg, "ck/LRS3_V_WER19.1/model.pth")).endswith("--only vsr --dest ck")
    e = missing_asset_error(cfg, "exp/LRS3/w/checkpoint/1000000.pkl")
    assert str(e).endswith("not found; fetch it with: python download_checkpoints.py --only melgen")
    e = missing_asset_error(cfg, "my/own.pkl")
    assert str(e) == f"{Path('my/own.pkl')}: not found; it is not one of the published assets " \
                     "(python download_checkpoints.py --list shows them)"


def test_missing_asset_error_for_a_damaged_file(env):
    cfg, _, root = env
    (root / "ck").mkdir()
    (root / "ck/g_02400000").write_bytes(b"<html>quota</html>")
    e = missing_asset_error(cfg, "voc")
    assert "incomplete or damaged (a web page, not the file" in str(e)
    assert "fetch it again with: python download_checkpoints.py --only voc" in str(e)
    with pytest.raises(LipVoicerError, match="incomplete or damaged"):
        require_asset(cfg, "voc")


def test_require_asset_returns_the_path(env):
    cfg, _, root = env
    run(cfg, "--only", "vsr")
    assert require_asset(cfg, "vsr") == Path("ck/LRS3_V_WER19.1")


def test_fetch_command_for_default_checkpoints_dir():
    cfg = OmegaConf.create({"paths": {"checkpoints_dir": "checkpoints"}, "assets": TABLE})
    assert fetch_command(cfg, "voc") == "python download_checkpoints.py --only voc"


@pytest.mark.parametrize("field, value, msg", [
    ("source", "ftp", r"cfg\.assets\.voc\): source must be one of gdrive, url"),
    ("check", "md5", r"check must be one of"),
    ("id", None, r"a Google Drive asset needs an id"),
])
def test_bad_asset_table_entry(field, value, msg):
    entry = dict(TABLE["voc"])
    entry[field] = value
    cfg = OmegaConf.create({"paths": {"checkpoints_dir": "ck"}, "assets": {"voc": entry}})
    with pytest.raises(LipVoicerError, match=msg):
        asset_table(cfg)


# ------------------------------------------------------------------ the real table
SPEC_IDS = {
    "1gTIpxaMx31ZUhPd2jW8Bt8u4QknieO31", "1MmmPGsrRyVH9hyuYc2HC625G6mFgQM_G", "1adeCf4NzhshJVU-JndlKpC34rRwJOQ2B",
    "18F1xsk0A4cqoxlOE58LB5Rl6pBoCftCL", "1PSo4ZQIZPWEI_S5LHkJBo0gYhQpWzRnh", "1u3U3aHaTWvR_NTftkUGv1JXkxpX1pkOL",
    "1zKp376kItVhceTFSi2_-EMG3oeYbSC0U", "1l71jUmRdQMFO2AVezxweENpZgdvL7TyD", "1h0gcgifwe5HVM76rlREHj1daBNItWh7e",
    "1t8RHhzDTTvOQkLQhmK1LZGnXRRXOXGi6", "1g31HGxJnnOwYl17b70ObFQZ1TSnPvRQv", "1T4ZFGvW9643844BaOnJyo78-KN83h8Yf",
    "1sYs2MAmCF80GPK_kBieU2S5pOfJpcBei",
    # the published LipVoicer test audio (original README, "Benchmarks Test Audio Signals")
    "15BgeaU-j4B-o9WfP-d-BSnnjslAxOHkt", "1y4O3grI7uwnjN5GIoydrGhyvK63ptLSy",
}


def test_published_table_covers_spec_and_matches_config_paths():
    from tests.helpers import compose_cfg

    cfg = compose_cfg()
    table = asset_table(cfg)
    assert {a.id for a in table.values() if a.source == "gdrive"} == SPEC_IDS
    assert asset_path(cfg, "hifigan") == Path(str(cfg.vocoder.checkpoint))
    for ds in ("lrs2", "lrs3"):
        c = compose_cfg([f"dataset={ds}"])
        assert asset_path(c, f"melgen_{ds}") == Path(str(c.generate.ckpt_path))
    assert asset_path(cfg, "vsr_lrs3") == Path("checkpoints/LRS3_V_WER19.1")
    assert table["vsr_lrs3"].members == ("model.pth", "model.json")
    assert table["vsr_units"].lines == 5047 and table["mean_face"].shape == (68, 2)
    assert all(a.url.startswith("https://raw.githubusercontent.com/mpc001/Visual_Speech_Recognition_for_Multiple_"
                                "Languages/") for a in table.values() if a.source == "url" and a.name != "syncnet_v2")
    # SyncNet's weights (LSE-C / LSE-D, evaluation only) come from VGG's lip-sync page, as syncnet_python fetches them
    assert table["syncnet_v2"].url == "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
    assert asset_path(cfg, "syncnet_v2") == Path(str(cfg.syncnet.ckpt)) and not table["syncnet_v2"].default


def test_mean_face_copy_passes_the_check():
    from tests.parity_utils import parity_dir

    path = parity_dir() / "20words_mean_face.npy"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    from tests.helpers import compose_cfg

    cfg = compose_cfg()
    assert check_asset(cfg, "mean_face", path) is None


def test_main_parses_arguments():
    a = dl.parse_args(["--only", "hifigan", "vsr_lrs3", "--dest", "/x"])
    assert isinstance(a, argparse.Namespace) and a.only == ["hifigan", "vsr_lrs3"] and a.dest == "/x"


def test_archive_with_a_top_folder_named_like_the_target(env):
    cfg, net, root = env
    net.payloads["ID_EXTRA"] = zip_bytes({"LRS2/main/1/00001.txt": b"hello"})
    assert run(cfg, "--only", "extra")[0] == 0
    assert (root / "ck/texts/LRS2/main/1/00001.txt").is_file()


def test_main_exit_codes(env, monkeypatch, capsys):
    cfg, net, _ = env
    monkeypatch.setattr(dl, "load_config", lambda: cfg)
    assert dl.main(["--only", "voc"]) == 0
    net.errors["ID_LM"] = ConnectionError("connection reset")
    assert dl.main(["--only", "lm"]) == 1
    err = capsys.readouterr().err
    assert "error: lm: network or file error (ConnectionError: connection reset)" in err


def test_published_test_audio_is_listed_and_fetched_with_only(tmp_path, monkeypatch):
    """The LipVoicer test audio of LRS2 / LRS3 (original README ids) is in the real table: --list shows it,
    --only fetches it (a zip of wavs) into checkpoints/published_audio/<DS>_test; not a default asset."""
    from omegaconf import OmegaConf

    from tests.helpers import compose_cfg

    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.merge(compose_cfg(), {"paths": {"checkpoints_dir": "ck"}})
    table = asset_table(cfg)
    assert table["published_audio_lrs2"].id == "15BgeaU-j4B-o9WfP-d-BSnnjslAxOHkt"
    assert table["published_audio_lrs3"].id == "1y4O3grI7uwnjN5GIoydrGhyvK63ptLSy"
    assert not table["published_audio_lrs2"].default and table["published_audio_lrs3"].unpack
    net = FakeNet(monkeypatch)
    net.payloads["1y4O3grI7uwnjN5GIoydrGhyvK63ptLSy"] = zip_bytes({"spk/00001.wav": b"RIFF0000WAVE"})
    rc, out, _ = run(cfg, "--list")
    assert rc == 0 and net.calls == []
    assert "published_audio_lrs2" in out and "published_audio_lrs3" in out
    rc, out, err = run(cfg, "--only", "published_audio_lrs3")
    assert rc == 0, err
    assert net.calls == ["1y4O3grI7uwnjN5GIoydrGhyvK63ptLSy"]
    assert (tmp_path / "ck/published_audio/LRS3_test/spk/00001.wav").is_file()
