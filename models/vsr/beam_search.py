"""Joint CTC/attention beam search with an optional language model, batched over beams.

Every step scores all running hypotheses at once:

    score(g + c) = score(g) + (1 - w_ctc) * log p_dec(c | g) + w_lm * log p_lm(c | g)
                   + penalty + w_ctc * [log psi_ctc(g + c) - log psi_ctc(g)]

CTC prefix scores are only computed for the `int(1.5 * beam)` best tokens of each
hypothesis under the decoder (plus `<eos>`), then the `beam` best (hypothesis,
token) pairs over the whole beam are kept. A hypothesis that emits `<eos>` leaves
the beam; at the maximum length (the number of video frames, for maxlenratio 0)
`<eos>` is appended to the survivors. With maxlenratio 0 the search also stops
when, for the last three lengths, the best finished hypothesis of that length is
more than 10 (log) below the best finished one ("end detection"). The result is
every finished hypothesis, best first. This reproduces the published lip reader's
decoding; decoder and LM reuse cached keys/values so each step costs one position.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.vsr.ctc import CTCPrefixScorer


@dataclass
class Hypothesis:
    yseq: list[int]                 # token ids including the leading sos and the final eos
    score: torch.Tensor             # total weighted log score (0-dim tensor)
    scores: dict = field(default_factory=dict)  # unweighted per-scorer totals (floats)


def end_detect(ended: list[Hypothesis], i: int, m_count: int = 3, d_end: float = -10.0) -> bool:
    """True when the best finished hypotheses of lengths i, i-1, i-2 are all far below the best one."""
    if not ended:
        return False
    best = max(float(h.score) for h in ended)
    count = 0
    for m in range(m_count):
        same = [float(h.score) for h in ended if len(h.yseq) == i - m]
        if same and max(same) - best < d_end:
            count += 1
    return count == m_count


class BeamSearch:
    def __init__(self, model, lm=None, *, beam_size: int = 40, ctc_weight: float = 0.1, lm_weight: float = 0.3,
                 penalty: float = 0.0, maxlenratio: float = 0.0, pre_beam_ratio: float = 1.5,
                 ctc_method: str = "auto"):
        """ctc_method: 'loop' (frame loop, the original's arithmetic), 'scan' (closed form in
        float64, few GPU kernels per step) or 'auto' (scan on CUDA, loop otherwise)."""
        if ctc_method not in ("auto", "loop", "scan"):
            raise ValueError(f"ctc_method must be auto, loop or scan (got {ctc_method!r})")
        self.ctc_method = ctc_method
        if beam_size < 1:
            raise ValueError("beam_size must be >= 1")
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError("ctc_weight must be in [0, 1]")
        self.model, self.lm = model, lm
        self.vocab = model.odim
        self.sos, self.eos, self.blank = model.sos, model.eos, model.blank
        self.beam = beam_size
        self.w_dec, self.w_ctc, self.w_lm, self.penalty = 1.0 - ctc_weight, ctc_weight, lm_weight, penalty
        self.use_dec = model.decoder is not None and self.w_dec != 0
        self.use_ctc = model.ctc is not None and self.w_ctc != 0
        self.use_lm = lm is not None and self.w_lm != 0
        self.use_lb = penalty != 0
        if not (self.use_dec or self.use_ctc):
            raise ValueError("nothing to decode with: the model has no decoder/CTC for these weights")
        self.maxlenratio = maxlenratio
        self.pre_beam = int(pre_beam_ratio * beam_size)
        self.do_pre_beam = self.use_dec and self.use_ctc and self.w_ctc != 1.0 and self.pre_beam < self.vocab

    def max_length(self, n_frames: int) -> int:
        if self.maxlenratio == 0:
            return n_frames
        if self.maxlenratio < 0:
            return -int(self.maxlenratio)
        return max(1, int(self.maxlenratio * n_frames))

    @torch.inference_mode()
    def __call__(self, enc: torch.Tensor) -> list[Hypothesis]:
        """enc (T, D) encoder output of one utterance -> finished hypotheses, best first."""
        dev, V = enc.device, self.vocab
        maxlen = self.max_length(enc.size(0))
        yseq = torch.full((1, 1), self.sos, dtype=torch.long, device=dev)
        score = torch.zeros(1, dtype=enc.dtype, device=dev)
        totals = {k: torch.zeros(1, dtype=enc.dtype, device=dev) for k, on in
                  (("decoder", self.use_dec), ("ctc", self.use_ctc), ("lm", self.use_lm),
                   ("length_bonus", self.use_lb)) if on}
        dec_cache = lm_cache = None
        if self.use_dec:
            mem_kv = self.model.decoder.memory_kv(enc.unsqueeze(0))
        if self.use_ctc:
            ctc = CTCPrefixScorer(self.model.ctc.log_softmax(enc.unsqueeze(0))[0], self.blank, self.eos)
            ctc_r, ctc_s = ctc.initial_state()
            method = self.ctc_method if self.ctc_method != "auto" else ("scan" if enc.is_cuda else "loop")
        ended: list[Hypothesis] = []

        for i in range(maxlen):
            n = yseq.size(0)
            weighted = torch.zeros(n, V, dtype=enc.dtype, device=dev)
            step = {}
            if self.use_dec:
                step["decoder"], dec_new = self.model.decoder.step(yseq, dec_cache, mem_kv)
                weighted += self.w_dec * step["decoder"]
            if self.use_lm:
                step["lm"], lm_new = self.lm.step(yseq, lm_cache)
                weighted += self.w_lm * step["lm"]
            if self.use_lb:
                weighted += self.penalty * 1.0
            if self.use_ctc:
                ids = torch.topk(step["decoder"], self.pre_beam, dim=-1)[1] if self.do_pre_beam else None
                step["ctc"], r_all, log_psi = ctc.score(yseq[:, -1], yseq.size(1) - 1, ctc_r, ctc_s, ids,
                                                           method)
                weighted += self.w_ctc * step["ctc"]
            weighted += score.unsqueeze(1)

            score, flat = weighted.view(-1).topk(min(self.beam, weighted.numel()))
            prev = torch.div(flat, V, rounding_mode="trunc")
            tok = flat % V
            yseq = torch.cat([yseq[prev], tok.unsqueeze(1)], dim=1)
            for k in totals:
                totals[k] = totals[k][prev] + (step[k][prev, tok] if k in step else 1.0)
            if self.use_dec:
                dec_cache = [(k[prev], v[prev]) for k, v in dec_new]
            if self.use_lm:
                lm_cache = [(k[prev], v[prev]) for k, v in lm_new]
            if self.use_ctc:
                ctc_r, ctc_s = ctc.select(r_all, log_psi, ids, prev, tok)

            if i == maxlen - 1:  # make sure something ends
                yseq = torch.cat([yseq, torch.full_like(yseq[:, :1], self.eos)], dim=1)
            is_eos = (yseq[:, -1] == self.eos).tolist()
            if any(is_eos):
                rows = yseq.tolist()
                tot = {k: v.tolist() for k, v in totals.items()}
                for b, done in enumerate(is_eos):
                    if done:
                        ended.append(Hypothesis(rows[b], score[b].clone(), {k: tot[k][b] for k in tot}))
                keep = torch.tensor([b for b, done in enumerate(is_eos) if not done], dtype=torch.long, device=dev)
                yseq, score = yseq[keep], score[keep]
                totals = {k: v[keep] for k, v in totals.items()}
                if self.use_dec:
                    dec_cache = [(k[keep], v[keep]) for k, v in dec_cache]
                if self.use_lm:
                    lm_cache = [(k[keep], v[keep]) for k, v in lm_cache]
                if self.use_ctc:
                    ctc_r, ctc_s = ctc_r[:, :, keep], ctc_s[keep]
            if self.maxlenratio == 0.0 and end_detect(ended, i):
                break
            if yseq.size(0) == 0:
                break
        return sorted(ended, key=lambda h: float(h.score), reverse=True)
