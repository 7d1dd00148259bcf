"""train_asr.py: a tiny classifier on the tiny LRS3-layout corpus (CPU, a few seconds)."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO_ROOT, compose_cfg

TINY_ASR = [
    "asr.stem_filters=8", "asr.dims=[16,24,32]", "asr.num_blocks=[1,1,1]", "asr.patch_size=[3,1,1]",
    "asr.num_heads=2", "asr.conv_kernel=5", "asr.ff_ratio=2", "asr.step_embed_dim_in=16",
    "asr.step_embed_dim_mid=32", "asr.step_embed_dim_out=32", "asr.vocab_size=24",
]


@pytest.fixture(scope="module")
def asr_setup(tiny_corpus, tmp_path_factory):
    from dataloaders.tokenizer import collect_lrs_transcripts, train_bpe

    tok = train_bpe(collect_lrs_transcripts(tiny_corpus / "videos"), tmp_path_factory.mktemp("tok") / "bpe24.model",
                    vocab_size=24)
    return tiny_corpus, tok


def overrides(corpus, tok, save_dir, extra=()):
    return [f"dataset.root={corpus}", f"asr.train.tokenizer={tok}", f"asr.train.save_dir={save_dir}",
            "asr.train.batch_size_per_gpu=2", "asr.train.accumulated_steps=2", "asr.train.num_workers=0",
            "asr.train.device=cpu", "asr.train.iters_per_logging=1", "asr.train.eval_max_clips=0",
            "asr.train.eval_t=[0,100]", *TINY_ASR, *extra]


def test_dataset_items_and_collate(asr_setup):
    from dataloaders.asr_dataset import ASRDataset, collate_asr
    from dataloaders.tokenizer import BPETokenizer

    corpus, tok = asr_setup
    cfg = compose_cfg([f"dataset.root={corpus}"])
    tokenizer = BPETokenizer(tok)
    ds = ASRDataset(cfg, "train", tokenizer)
    assert len(ds) == 4
    items = [ds[i] for i in range(4)]
    assert all(it["mel"].shape[0] == 80 and it["mel"].min() >= -1.0 - 1e-6 for it in items)
    # digits in transcripts are spelled as words (dataloaders/text.py)
    assert tokenizer.decode(items[0]["tokens"].tolist()) == items[0]["text"] == "clip number zero"
    batch = collate_asr(items)
    assert batch["mel"].shape == (4, 80, int(batch["lengths"].max()))
    assert batch["tokens"].shape[0] == 4 and (batch["token_lengths"] > 0).all()
    # too-long clips: replaced by the next usable one in training, left out otherwise
    short = ASRDataset(cfg, "train", tokenizer, max_frames=110)
    assert all(short[i]["mel"].shape[1] <= 110 for i in range(4))
    held_out = ASRDataset(cfg, "test", tokenizer, max_frames=100, substitute=False)
    assert collate_asr([held_out[i] for i in range(len(held_out))])["mel"].shape[0] == 1


def test_a_few_steps_lower_the_loss(asr_setup):
    from dataloaders.asr_dataset import ASRDataset, collate_asr
    from models.asr import build_asr
    from trainers.asr import training_loss
    from models.diffusion.schedule import DiffusionSchedule
    from dataloaders.tokenizer import BPETokenizer

    corpus, tok = asr_setup
    cfg = compose_cfg([f"dataset.root={corpus}", "asr.dropout=0.0", *TINY_ASR])
    ds = ASRDataset(cfg, "train", BPETokenizer(tok))
    batch = collate_asr([ds[i] for i in range(4)])
    torch.manual_seed(0)
    model = build_asr(cfg.asr).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sch = DiffusionSchedule.from_config(cfg.diffusion)
    steps = torch.tensor([0, 50, 150, 300])

    def loss_now():
        return training_loss(model, sch, batch, 350, "cpu", torch.Generator().manual_seed(0), steps)

    first = float(loss_now().detach())
    for _ in range(25):
        opt.zero_grad()
        loss_now().backward()
        opt.step()
    last = float(loss_now().detach())
    assert torch.isfinite(torch.tensor(first)) and last < 0.7 * first, (first, last)


def test_train_checkpoint_resume_and_load(asr_setup, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from models.asr import load_asr_checkpoint
    from trainers.asr import experiment_dir, train

    corpus, tok = asr_setup
    base = overrides(corpus, tok, tmp_path / "a", ["asr.train.iters_per_ckpt=2", "asr.train.iters_per_eval=2"])
    cfg = compose_cfg(base + ["asr.train.n_iters=2"])
    first = train(cfg)
    assert first is not None and first.name == "2.pkl"
    ckpt = torch.load(first, weights_only=False)
    assert ckpt["model_step"] == 2 and ckpt["is_distributed"] is False and ckpt["optimizer_state_dict"]
    model = load_asr_checkpoint(first, cfg.asr)
    logits, _ = model(torch.zeros(1, 80, 40), None, torch.tensor([[10.0]]))
    assert logits.shape == (1, 5, 24)
    # resume to 4 == an uninterrupted run to 4
    resumed = train(compose_cfg(base + ["asr.train.n_iters=4"]))
    straight = train(compose_cfg(overrides(corpus, tok, tmp_path / "b", ["asr.train.iters_per_ckpt=4",
                                                                          "asr.train.iters_per_eval=0",
                                                                          "asr.train.n_iters=4"])))
    a = torch.load(resumed, weights_only=False)["model_state_dict"]
    b = torch.load(straight, weights_only=False)["model_state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ev = EventAccumulator(str(experiment_dir(cfg) / "tensorboard"))
    ev.Reload()
    tags = ev.Tags()["scalars"]
    assert {"train/loss", "eval/wer_t0", "eval/wer_t100"} <= set(tags)
    assert [e.step for e in ev.Scalars("eval/wer_t0")] == [2, 4]


def test_bad_setup_is_one_line_error(asr_setup, tmp_path):
    from trainers.asr import train
    from utils.errors import LipVoicerError

    corpus, tok = asr_setup
    with pytest.raises(LipVoicerError, match="tokenizer has 24 pieces but asr.vocab_size is 30"):
        train(compose_cfg(overrides(corpus, tok, tmp_path, ["asr.vocab_size=30"])))
    r = subprocess.run([sys.executable, "train_asr.py", *overrides(corpus, tmp_path / "none.model", tmp_path),
                        f"hydra.run.dir={tmp_path / 'hydra'}"],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "none.model: tokenizer not found" in r.stderr


def test_a_garbage_mel_is_skipped_and_resume_stays_exact(asr_setup, tmp_path, caplog):
    """issue 14: a garbage .wav.spec (training and held-out) is skipped with one warning, counted in
    TensorBoard; too many stop with one line; a resumed run equals an uninterrupted one."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainers.asr import experiment_dir, train
    from utils.errors import LipVoicerError

    corpus, tok = asr_setup
    root = tmp_path / "corpus"
    shutil.copytree(corpus, root)
    bad = root / "audios" / "pretrain/spk0/00002.wav.spec"
    bad.write_bytes(b"garbage")
    bad_test = root / "audios" / "test/spk2/00001.wav.spec"
    bad_test.write_bytes(b"garbage")
    with pytest.raises(LipVoicerError, match=r"^1 of 4 training clips are bad, more than asr\.train\.max_bad_fraction="
                                             rf"0\.05 allows \(0\); the first: {bad}: not a readable mel file \(not a saved tensor\)$"):
        train(compose_cfg(overrides(root, tok, tmp_path / "x", ["asr.train.n_iters=2", "asr.train.iters_per_eval=0"])))

    base = ["asr.train.max_bad_fraction=0.5", "asr.train.iters_per_ckpt=2"]
    cfg = compose_cfg(overrides(root, tok, tmp_path / "a", base + ["asr.train.n_iters=2", "asr.train.iters_per_eval=2"]))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        straight = train(cfg)    # 2 iterations x 2 micro-batches x 2 clips: every clip is drawn
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if str(bad) in m]) == 1, messages
    assert [m for m in messages if str(bad_test) in m][0].startswith(
        f"held-out clip left out of the WER: {bad_test}: not a readable mel file (")
    ev = EventAccumulator(str(experiment_dir(cfg) / "tensorboard"))
    ev.Reload()
    assert ev.Scalars("data/skipped_clips")[-1].value == 1.0
    assert [e.step for e in ev.Scalars("eval/wer_t0")] == [2]
    for n in (1, 2):
        resumed = train(compose_cfg(overrides(root, tok, tmp_path / "b", base + [f"asr.train.n_iters={n}",
                                                                                  "asr.train.iters_per_eval=0"])))
    a = torch.load(straight, weights_only=False)["model_state_dict"]
    b = torch.load(resumed, weights_only=False)["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
