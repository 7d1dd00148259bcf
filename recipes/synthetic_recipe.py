"""The synthetic-corpus recipe: build, prepare, train, generate three ways, score (recipes/synthetic.py).

It proves on the project's own data that the pieces learn and that ASR guidance from
(possibly wrong) text makes the generated speech more intelligible. Its stages, in order, and
the module that holds each (each module imports only those above it; docs/synthetic.md):

  synthetic_settings.py    RecipeSettings, the model sizes, running a script, stage times
  synthetic_training.py    corpus, prep, tokenizer, judge, asr, melgen, vocoder
  synthetic_conditions.py  texts, generate          (the conditions: no guidance, true / corrupted text, sweeps)
  synthetic_listening.py   listen                   (the independent listener on every condition)
  synthetic_scoring.py     evaluate, sweep          (the judge, the guidance ASR, chance; results.md)
  synthetic_lip_reader.py  lipreader                (--lipreader_iters; trained, then scored on the test clips)
  synthetic_model_set.py                            (the trained models as a shipped model set)
  synthetic_publish.py     report                   (results_full.json; --publish: docs/ and the model set)
  synthetic_recipe.py      this list and the order it runs in

Every stage runs the project's own scripts as subprocesses with Hydra overrides and
skips work already done, so the recipe can be re-run (or run stage by stage) until
everything is finished.
"""
from __future__ import annotations

import logging
import time

from recipes import (synthetic_conditions, synthetic_lip_reader, synthetic_listening, synthetic_publish,
                     synthetic_scoring, synthetic_training)
from recipes.synthetic_settings import MELGEN_SIZES, VOCODERS, RecipeSettings, add_stage_time
from recipes.synthetic_training import TRAINING_STAGES, ensure_mean_face, run_in_lanes
from utils.errors import LipVoicerError

log = logging.getLogger(__name__)

# The recognisers train before MelGen: the judge's held-out WER on clean mels is the first sign that the corpus
# and the sizes work.
STAGES = ("corpus", "prep", "tokenizer", "judge", "asr", "melgen", "vocoder", "lipreader", "texts", "generate",
          "listen", "evaluate", "sweep", "report")
STAGE_FUNCS = {**synthetic_training.STAGE_FUNCS, **synthetic_lip_reader.STAGE_FUNCS,
               **synthetic_conditions.STAGE_FUNCS, **synthetic_listening.STAGE_FUNCS,
               **synthetic_scoring.STAGE_FUNCS, **synthetic_publish.STAGE_FUNCS}


def run_recipe(s: RecipeSettings, stages: list[str] | None = None) -> None:
    stages = list(stages or STAGES)
    bad = [x for x in stages if x not in STAGE_FUNCS]
    if bad:
        raise LipVoicerError(f"unknown recipe stage(s) {', '.join(bad)} (stages: {', '.join(STAGES)})")
    if s.size not in MELGEN_SIZES:
        raise LipVoicerError(f"unknown size '{s.size}' (sizes: {', '.join(MELGEN_SIZES)})")
    if s.vocoder not in VOCODERS:
        raise LipVoicerError(f"unknown vocoder '{s.vocoder}' (vocoders: {', '.join(VOCODERS)})")
    s.work_dir.mkdir(parents=True, exist_ok=True)
    if "prep" in stages:
        ensure_mean_face(s)  # before the corpus is built: a missing file stops the recipe at once
    todo = [name for name in STAGES if name in stages]
    together = [n for n in todo if n in TRAINING_STAGES] if s.parallel else []
    for name in todo:
        if name in together:
            if name == together[0]:
                run_in_lanes(s, together, run_stage)
            continue
        run_stage(s, name)


def run_stage(s: RecipeSettings, name: str) -> None:
    t0 = time.time()
    log.info("=== stage %s", name)
    try:
        STAGE_FUNCS[name](s)
    finally:
        add_stage_time(s, name, time.time() - t0)
    log.info("=== stage %s done in %.1f s", name, time.time() - t0)
