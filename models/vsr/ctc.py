"""CTC head and vectorised CTC prefix scoring for joint CTC/attention beam search.

Prefix scoring follows the hybrid CTC/attention algorithm (Watanabe et al. 2017,
vectorised as in Seki et al. 2019): for every running hypothesis g and candidate
token c the forward variables r_t^n(g+c), r_t^b(g+c) are computed over all frames,
and the prefix probability psi(g+c) is returned as an increment over psi(g).
`<eos>` scores the complete sequence g; `<blank>` is never proposed. All
hypotheses and candidate tokens of a step are processed together; only the frame
recursion is a loop.
"""
from __future__ import annotations

import torch
from torch import nn

LOGZERO = -10000000000.0


class CTC(nn.Module):
    def __init__(self, odim: int, size: int):
        super().__init__()
        self.ctc_lo = nn.Linear(size, odim)

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.ctc_lo(x), dim=-1)


class CTCPrefixScorer:
    """Prefix scores for one utterance. State per hypothesis: r (T, 2) and psi of the prefix."""

    def __init__(self, logp: torch.Tensor, blank: int, eos: int):
        """logp (T, V) CTC log-probabilities of one utterance."""
        self.T, self.V = logp.shape
        self.blank, self.eos = blank, eos
        self.x = logp
        self.xb = logp[:, blank]

    def initial_state(self):
        """State of the empty prefix (sos): r^n = 0, r^b_t = prod of blanks up to t; psi = 1."""
        r = torch.full((self.T, 2, 1), LOGZERO, dtype=self.x.dtype, device=self.x.device)
        r[:, 1, 0] = torch.cumsum(self.xb, 0)
        return r, torch.zeros(1, dtype=self.x.dtype, device=self.x.device)

    def score(self, last: torch.Tensor, out_len: int, r_prev: torch.Tensor, s_prev: torch.Tensor,
              ids: torch.Tensor | None = None, method: str = "loop"):
        """Score candidate tokens for n prefixes of the same length.

        last (n,) last token of each prefix; out_len = prefix length without sos;
        r_prev (T, 2, n); s_prev (n,) log psi of each prefix; ids (n, S) candidate
        tokens per prefix (None = the whole vocabulary).
        Returns (scores (n, V): log psi(g+c) - log psi(g), LOGZERO-based where not scored;
        r (T, 2, n, S); log_psi (n, V)).
        """
        n, T = last.size(0), self.T
        if ids is None:
            xs = self.x.unsqueeze(1).expand(T, n, self.V)
            same = (torch.arange(self.V, device=last.device).unsqueeze(0) == last.unsqueeze(1))
        else:
            xs = self.x[:, ids]  # (T, n, S)
            same = ids == last.unsqueeze(1)
        S = xs.size(2)
        x2 = torch.stack([xs, self.xb.view(T, 1, 1).expand(T, n, S)])  # (2, T, n, S)

        r_sum = torch.logsumexp(r_prev, dim=1)  # (T, n): log(r^n(g) + r^b(g))
        # a repeated label can only follow the prefix through a blank
        log_phi = torch.where(same.unsqueeze(0), r_prev[:, 1].unsqueeze(2), r_sum.unsqueeze(2))  # (T, n, S)
        start = max(out_len, 1)
        if method == "scan" and start < T:
            r = self._forward_scan(x2, log_phi, start, out_len)
        else:
            r = torch.full((T, 2, n, S), LOGZERO, dtype=self.x.dtype, device=self.x.device)
            if out_len == 0:
                r[0, 0] = x2[0, 0]
            for t in range(start, T):
                rp = r[t - 1]
                rr = torch.stack([rp[0], log_phi[t - 1], rp[0], rp[1]]).view(2, 2, n, S)
                r[t] = torch.logsumexp(rr, 1) + x2[:, t]

        if start < T:
            log_phi_x = torch.cat((log_phi[:1], log_phi[:-1]), dim=0) + x2[0]
            psi = torch.logsumexp(torch.cat((log_phi_x[start:], r[start - 1, 0].unsqueeze(0)), dim=0), dim=0)
        else:  # longer than the number of frames: no continuation is possible
            psi = torch.full((n, S), LOGZERO, dtype=self.x.dtype, device=self.x.device)
        if ids is None:
            log_psi = psi
        else:
            log_psi = torch.full((n, self.V), LOGZERO, dtype=self.x.dtype, device=self.x.device)
            log_psi.scatter_(1, ids, psi)
        log_psi[:, self.eos] = r_sum[T - 1]
        log_psi[:, self.blank] = LOGZERO
        return log_psi - s_prev.unsqueeze(1), r, log_psi

    def _forward_scan(self, x2: torch.Tensor, log_phi: torch.Tensor, start: int, out_len: int) -> torch.Tensor:
        """The frame recursion of `score` in closed form (few kernels instead of a loop over frames).

        r^n_t = y_t (r^n_{t-1} + phi_{t-1}) and r^b_t = b_t (r^n_{t-1} + r^b_{t-1}) are linear
        recurrences: with cumulative log-probabilities P_t = sum_{k<=t} log y_k,
        r^n_t = exp(P_t) (r^n_{start-1} + sum_{s<=t} phi_{s-1} exp(-P_{s-1})), i.e. a
        log-cumsum-exp. Computed in float64 (the cumulative sums are large), returned in
        the input dtype; agrees with the loop to float32 rounding.
        """
        T, n, S = x2.shape[1:]
        f64 = torch.float64
        xs, xb = x2[0, start:].to(f64), x2[1, start:].to(f64)  # frames start .. T-1
        init_n = (x2[0, 0].to(f64) if out_len == 0
                  else torch.full((n, S), LOGZERO, dtype=f64, device=x2.device))  # r^n_{start-1}
        zero = torch.zeros(1, n, S, dtype=f64, device=x2.device)
        pc = torch.cumsum(xs, 0)
        pc_prev = torch.cat([zero, pc[:-1]], 0)
        rn = pc + torch.logaddexp(init_n, torch.logcumsumexp(log_phi[start - 1:T - 1].to(f64) - pc_prev, 0))
        bc = torch.cumsum(xb, 0)
        bc_prev = torch.cat([zero, bc[:-1]], 0)
        rn_prev = torch.cat([init_n.unsqueeze(0), rn[:-1]], 0)
        rb = bc + torch.logcumsumexp(rn_prev - bc_prev, 0)  # r^b_{start-1} is zero
        r = torch.full((T, 2, n, S), LOGZERO, dtype=self.x.dtype, device=self.x.device)
        r[start - 1, 0] = init_n.to(self.x.dtype)
        r[start:, 0] = rn.clamp_min(LOGZERO).to(self.x.dtype)
        r[start:, 1] = rb.clamp_min(LOGZERO).to(self.x.dtype)
        return r

    @staticmethod
    def select(r: torch.Tensor, log_psi: torch.Tensor, ids: torch.Tensor | None, prev: torch.Tensor,
               tok: torch.Tensor):
        """States of the chosen (prefix, token) pairs: (r (T, 2, k), s (k,))."""
        if ids is None:
            col = tok
        else:
            hit = ids[prev] == tok.unsqueeze(1)  # (k, S); a token outside the candidates gets column 0
            col = hit.to(torch.int64).argmax(dim=1)
        return r[:, :, prev, col], log_psi[prev, tok]
