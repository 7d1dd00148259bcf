"""Fetch the published LipVoicer assets to where the configs look for them.

    python download_checkpoints.py                 # every default asset (both datasets' models, the lip reader, LMs)
    python download_checkpoints.py --for-inference # only what inference_real_video.py needs with the default settings
    python download_checkpoints.py --for-inference dataset=lrs2 generate.text="'hello'"   # ... with these overrides
    python download_checkpoints.py --only hifigan vsr_lrs3
    python download_checkpoints.py --list          # what is present, nothing fetched
    python download_checkpoints.py --all           # also the benchmark-only lip-read texts
    python download_checkpoints.py --dest /data/ckpt   # instead of paths.checkpoints_dir
    python download_checkpoints.py --face_alignment    # only the weights of prep.detector=face_alignment

The table of assets is configs/assets/published.yaml. Google Drive files are fetched
with gdown, the lip reader's small public files over HTTPS. Assets already present
and complete are skipped. A download goes to `<final name>.download` (gdown keeps its
own resumable `.part` file next to it) and is renamed to the final name only after it
passes the completeness check; zip archives are unpacked the same way. Run it from
the repository root: the MelGen checkpoints go to exp/<LRS2|LRS3>/... relative to the
working directory, where generate.ckpt_path points. Exit code 1 when any asset failed.
See docs/checkpoints.md.

`--face_alignment` fetches the weights of the face-alignment package (prep.detector=face_alignment,
dataloaders/prep/fan_landmarks.py): FAN-4 and the face detector of prep.face_alignment_detector,
with the package's own downloader into torch's hub folder ($TORCH_HOME/hub/checkpoints), where the
package looks for them. Alone it fetches only those; with --only / --all / --for-inference also the
assets those select. --for-inference with prep.detector=face_alignment includes them by itself.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from utils.assets import (MISSING, Asset, asset_path, asset_table, check_asset, check_file, check_folder,
                          fetch_command, find_asset_for_path)
from utils.config import compose_config as load_config  # the config the scripts see (tests replace it)
from utils.errors import LipVoicerError, exit_on_user_error
from models.model_sets import PUBLISHED, model_set_dir, model_set_name, resolve_model_set

REPO_ROOT = Path(__file__).resolve().parent
STAGING_SUFFIX = ".download"


class DownloadFailed(Exception):
    """One asset could not be fetched; the message is the reason (one line)."""


# ------------------------------------------------------------------ network (replaced in tests)
def download_gdrive(file_id: str, output: Path) -> None:
    """Fetch a Google Drive file to `output` with gdown (resumable: its .part file stays on failure)."""
    try:
        import gdown
    except ImportError:
        raise DownloadFailed("gdown is not installed (pip install -r requirements.txt)") from None
    # timeout: seconds without a byte before giving up; retries resume the same transfer.
    result = gdown.download(id=file_id, output=str(output), quiet=False, resume=True, timeout=60, retries=2)
    if result is None or not Path(output).is_file():
        raise DownloadFailed("gdown finished without writing the file")


def download_url(url: str, output: Path, timeout: float = 60.0) -> None:
    """Fetch a plain HTTPS file to `output` via a .part file."""
    part = output.with_name(output.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f)
        os.replace(part, output)
    finally:
        if part.exists():
            part.unlink()


def fetch(asset: Asset, output: Path) -> None:
    if asset.source == "gdrive":
        download_gdrive(asset.id, output)
    else:
        download_url(asset.url, output)


def _clip(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


def explain_failure(exc: BaseException) -> str:
    """One line for a failed download: Google Drive quota, refused link, network, or the error itself."""
    text = " ".join(str(exc).split())
    low = text.lower()
    kind = type(exc).__name__
    if isinstance(exc, DownloadFailed):  # our own reasons are already one line
        return text
    if "too many users" in low or "quota" in low:
        return "Google Drive refused: the file's download quota is exceeded (try again in a few hours)"
    if kind == "FileURLRetrievalError" or "cannot retrieve the public link" in low:
        return "Google Drive refused the link (download quota exceeded, or the file is no longer public)"
    if isinstance(exc, (OSError, TimeoutError)) or "connection" in kind.lower() or "timeout" in kind.lower():
        return f"network or file error ({kind}: {_clip(text)})"
    return f"{kind}: {_clip(text)}"


# ------------------------------------------------------------------ one asset
@dataclass
class Result:
    name: str
    status: str          # present | downloaded | FAILED | missing | incomplete
    path: Path
    detail: str = ""


def staging_path(asset: Asset, target: Path) -> Path:
    name = target.name + (".zip" if asset.unpack else "")
    return target.with_name(name + STAGING_SUFFIX)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _archive_root(folder: Path, asset: Asset, target: Path) -> Path:
    """The folder that holds an archive's files.

    The archive's own root, unless it holds a single sub-folder that is the asset's folder
    (named like the target, or holding the expected members, e.g. LRS3_V_WER19.1/model.pth).
    """
    entries = [p for p in folder.iterdir() if p.name not in ("__MACOSX", ".DS_Store")]
    if asset.members and all((folder / m).exists() for m in asset.members):
        return folder
    if len(entries) == 1 and entries[0].is_dir():
        sub = entries[0]
        if sub.name == target.name or (asset.members and all((sub / m).exists() for m in asset.members)):
            return sub
    return folder


def unpack(asset: Asset, archive: Path, target: Path) -> None:
    """Unpack `archive` into the folder `target` (replacing an incomplete one) once its files check out."""
    if not zipfile.is_zipfile(archive):
        raise DownloadFailed("the download is not a zip archive")
    work = target.with_name(target.name + ".unpacking")
    _remove(work)
    try:
        with zipfile.ZipFile(archive) as z:
            bad = z.testzip()
            if bad is not None:
                raise DownloadFailed(f"damaged zip archive (bad member {bad})")
            z.extractall(work)
        root = _archive_root(work, asset, target)
        reason = check_folder(root, asset.members)
        if reason is not None:
            raise DownloadFailed(f"the archive's contents fail the check: {reason}")
        old = target.with_name(target.name + ".old")
        _remove(old)
        if target.exists():
            os.replace(target, old)
        os.replace(root, target)
        _remove(old)
    finally:
        _remove(work)


def fetch_asset(cfg, asset: Asset, force: bool = False, log=print) -> Result:
    target = asset_path(cfg, asset)
    state = check_asset(cfg, asset)
    if state is None and not force:
        return Result(asset.name, "present", target, "already present")
    if state not in (None, MISSING):
        log(f"{asset.name}: {target} is incomplete ({state}); fetching it again")
    staging = staging_path(asset, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if staging.exists():
            # A finished download of an earlier run (gdown publishes it only when complete).
            if asset.unpack:
                reason = None if zipfile.is_zipfile(staging) else "not a zip archive"
            else:
                reason = check_file(staging, asset)
            if reason is not None:
                _remove(staging)
            else:
                log(f"{asset.name}: using the finished download {staging}")
        if not staging.exists():
            log(f"{asset.name}: fetching {asset.description} from {asset.remote}")
            fetch(asset, staging)
        if asset.unpack:
            try:
                unpack(asset, staging, target)
            except DownloadFailed:
                _remove(staging)  # a bad archive is fetched again next time
                raise
            _remove(staging)
        else:
            reason = check_file(staging, asset)
            if reason is not None:
                _remove(staging)
                raise DownloadFailed(f"the downloaded file fails the check: {reason}")
            os.replace(staging, target)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - every failure becomes one line in the summary
        hint = f"; or fetch {asset.remote} by hand and place it at {target}" + (" (unzipped)" if asset.unpack else "")
        return Result(asset.name, "FAILED", target, explain_failure(e) + hint)
    return Result(asset.name, "downloaded", target)


# ------------------------------------------------------------------ the face-alignment package's weights
def _wants_face_alignment(cfg, args) -> bool:
    prep = cfg.get("prep") or {}
    return bool(getattr(args, "face_alignment", False)) or (
        bool(getattr(args, "for_inference", False)) and str(prep.get("detector", "")) == "face_alignment")


def face_alignment_weights(cfg) -> list[tuple[str, Path]]:
    """(URL, file) of the weights prep.detector=face_alignment loads: FAN-4 and the face detector named by
    prep.face_alignment_detector (default sfd), in torch's hub folder."""
    from dataloaders.prep.fan_landmarks import weight_path, weight_urls

    prep = cfg.get("prep") or {}
    return [(url, weight_path(url)) for url in weight_urls(str(prep.get("face_alignment_detector", "sfd")))]


def fetch_face_alignment(cfg, force: bool = False, log=print) -> list[Result]:
    """Fetch the face-alignment weights (face_alignment_weights) with the package's downloader; one
    Result per file, named face_alignment/<file name>."""
    from dataloaders.prep.fan_landmarks import fetch_weight

    results = []
    for url, path in face_alignment_weights(cfg):
        name = f"face_alignment/{path.name}"
        if path.is_file() and not force:
            results.append(Result(name, "present", path, "already present"))
            continue
        old = path.with_name(path.name + ".old")
        if path.is_file():  # --force: the old file comes back if the new download fails
            os.replace(path, old)
        try:
            fetch_weight(url, log=log)
            results.append(Result(name, "downloaded", path))
        except LipVoicerError as e:
            results.append(Result(name, "FAILED", path, str(e)))
        if old.exists():
            if path.is_file():
                old.unlink()
            else:
                os.replace(old, path)
    return results


# ------------------------------------------------------------------ what one inference run needs
def inference_files(cfg) -> list[tuple[str, Path]]:
    """(what, path) of every file inference_real_video.py reads with this config: MelGen of dataset.name
    (generate.ckpt_path), HiFi-GAN, the mean face (mouth cropping); the ASR fine-tune and its tokenizer
    when generate.w_asr > 0; the lip reader, its units and (when vsr.lm_weight != 0) its LM when no
    generate.text is given."""
    gen, ck = cfg["generate"], Path(str(cfg["paths"]["checkpoints_dir"]))
    files = [("MelGen (generate.ckpt_path)", Path(str(gen["ckpt_path"]))),
             ("HiFi-GAN (vocoder.checkpoint)", Path(str(cfg["vocoder"]["checkpoint"]))),
             ("mean face (prep.mean_face_path)", Path(str(cfg["prep"]["mean_face_path"])))]
    if float(gen["w_asr"]) > 0:
        if gen.get("asr_ckpt"):
            asr = Path(str(gen["asr_ckpt"]))
        else:
            table, name = cfg["asr"]["checkpoints"], str(cfg["dataset"]["name"]).lower()
            if name not in table:
                raise LipVoicerError(f"no published ASR fine-tune for dataset '{cfg['dataset']['name']}' (have: "
                                     f"{', '.join(table)}); give one with generate.asr_ckpt=<checkpoint>")
            asr = ck / str(table[name])
        files += [("ASR fine-tune (generate.asr_ckpt)", asr), ("ASR tokenizer (asr.tokenizer)", ck / str(cfg["asr"]["tokenizer"]))]
    text = gen.get("text")
    if text is None or not str(text).strip():
        v = cfg["vsr"]
        keys = ["model_path", "model_conf", "units_path"] + (["lm_path", "lm_conf"] if float(v["lm_weight"]) else [])
        files += [(f"lip reader (vsr.{k})", Path(str(v[k]))) for k in keys]
    return files


def inference_assets(cfg) -> tuple[list[str], list[str]]:
    """(published assets this inference run needs, in table order; notes on the files it needs that are
    no published asset, e.g. your own checkpoint: `what: path` when present, `... not found` when not)."""
    needed, notes = set(), []
    for what, path in inference_files(cfg):
        asset = find_asset_for_path(cfg, path)
        if asset is not None:
            needed.add(asset.name)
        else:
            notes.append(f"{what}: {path}" + ("" if path.exists() else " not found (not a published asset: "
                                                                      "put your file there or change the setting)"))
    return [n for n in asset_table(cfg) if n in needed], notes


# ------------------------------------------------------------------ reporting
def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_table(results: list[Result]) -> str:
    rows = [("asset", "status", "size", "path")]
    for r in results:
        size = human_size(_size(r.path)) if r.status in ("present", "downloaded") else "-"
        rows.append((r.name, r.status, size, str(r.path)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def survey(cfg, names) -> list[Result]:
    """Presence of each asset without fetching anything."""
    table = asset_table(cfg)
    out = []
    for name in names:
        asset = table[name]
        reason = check_asset(cfg, asset)
        status = "present" if reason is None else ("missing" if reason == MISSING else "incomplete")
        out.append(Result(name, status, asset_path(cfg, asset), "" if reason in (None, MISSING) else reason))
    return out


# ------------------------------------------------------------------ entry point
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Fetch the published LipVoicer checkpoints and files.")
    p.add_argument("--only", nargs="+", metavar="NAME", help="fetch only these assets (see --list)")
    p.add_argument("--all", action="store_true", help="also fetch the benchmark-only assets")
    p.add_argument("--dest", help="folder for the assets that live under paths.checkpoints_dir "
                                   "(default: the config's paths.checkpoints_dir)")
    p.add_argument("--list", action="store_true", help="show every asset and whether it is present; fetch nothing")
    p.add_argument("--force", action="store_true", help="fetch again even when present")
    p.add_argument("--face_alignment", "--face-alignment", action="store_true",
                   help="fetch the weights of prep.detector=face_alignment (FAN-4 and the face detector of "
                        "prep.face_alignment_detector) into torch's hub folder; alone: only those")
    p.add_argument("--for-inference", action="store_true",
                   help="only the assets inference_real_video.py needs with these overrides (MelGen and ASR of "
                        "dataset.name, the ASR only when generate.w_asr > 0, HiFi-GAN, the mean face, the lip "
                        "reader only when no generate.text is given)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides (configs/config.yaml), e.g. dataset=lrs2 generate.w_asr=0")
    args = p.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"not a key=value override: {' '.join(bad)}")
    if args.for_inference and (args.only or args.all):
        p.error("--for-inference chooses the assets itself: leave out --only / --all")
    return args


def run(cfg, args, out=None, err=None) -> int:
    from omegaconf import OmegaConf

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr

    if args.dest:
        cfg = OmegaConf.merge(cfg, {"paths": {"checkpoints_dir": str(args.dest)}})
    only_face_alignment = getattr(args, "face_alignment", False) and not (
        args.only or args.all or getattr(args, "for_inference", False))
    table = {} if only_face_alignment else asset_table(cfg)
    if args.only:
        unknown = [n for n in args.only if n not in table]
        if unknown:
            raise LipVoicerError(f"unknown asset {', '.join(map(repr, unknown))}; known assets: {', '.join(table)}")
        names = list(dict.fromkeys(args.only))
    elif getattr(args, "for_inference", False) and model_set_name(cfg) != PUBLISHED:
        manifest = resolve_model_set(cfg)   # its files, checked
        print(f"models={model_set_name(cfg)}: every file ships in {model_set_dir(cfg)} ({len(manifest['files'])} files, "
              f"checked); nothing to fetch", file=out)
        return 0
    elif getattr(args, "for_inference", False):
        names, notes = inference_assets(cfg)
        print(f"this inference run needs: {', '.join(names) or 'no published asset'}", file=out)
        for note in notes:
            print(f"  also: {note}", file=out)
    elif only_face_alignment:
        names = []
    else:
        names = [n for n, a in table.items() if a.default or args.all]
    face_alignment = _wants_face_alignment(cfg, args)

    if args.list:
        results = [] if only_face_alignment else survey(
            cfg, names if getattr(args, "for_inference", False) else table)
        if face_alignment:
            results += [Result(f"face_alignment/{path.name}", "present" if path.is_file() else "missing", path)
                        for _, path in face_alignment_weights(cfg)]
        print(format_table(results), file=out)
        for r in results:
            if r.status == "incomplete":
                print(f"{r.name}: incomplete ({r.detail}); fetch it again with: {fetch_command(cfg, r.name)}",
                      file=out)
        absent = [r.name for r in results if r.status != "present"]
        if absent:
            print(f"{len(absent)} of {len(results)} not present; fetch one with: "
                  f"python download_checkpoints.py --only NAME (no --only: every default asset)", file=out)
        return 0

    def log(msg):
        print(msg, file=out, flush=True)

    results = [fetch_asset(cfg, table[n], force=args.force, log=log) for n in names]
    if face_alignment:
        results += fetch_face_alignment(cfg, force=args.force, log=log)
    print("", file=out)
    print(format_table(results), file=out)
    failed = [r for r in results if r.status == "FAILED"]
    for r in failed:
        print(f"error: {r.name}: {r.detail}", file=err)
    if failed:
        print(f"error: {len(failed)} of {len(results)} assets failed; see docs/checkpoints.md "
              f"(manual download and placement)", file=err)
        return 1
    return 0


@exit_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    return run(load_config(args.overrides) if args.overrides else load_config(), args)


if __name__ == "__main__":
    sys.exit(main())
