"""Exact Fisher-vector products for MAML's outer TRPO step, in Gauss-Newton form.

Used by :class:`metarl.algos.maml.maml.MAML` for plain MLP Gaussian / categorical policies
(``maml.py`` keeps the generic double-backward path for everything else); ``tests/test_fvp.py``
checks every product against that path.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from metarl.common.adaptation import InnerData
from metarl.common.policies import Params
from metarl.common.trpo import flatten, unflatten_like


# ---------------------------------------------------------------------------------------------------
# Outer TRPO update in Gauss-Newton form, with hand-derived MLP derivatives.
#
# At θ_old the KL(π_old || π_θ) of the post-update policies has zero gradient with respect to their
# distribution parameters o (mean and log-std, or logits, on the query observations), so its Hessian
# with respect to θ is exactly J^T K J: J = do/dθ through the adaptation and K the Hessian of the KL
# in output space (the distribution's Fisher: diag(1/σ²) for the mean and 2 for each log-std,
# diag(p) - pp^T for logits). With θ_{k+1} = θ_k - α ⊙ ∇L_k(θ_k), the chain rule gives
# J = J_q (I - α H_K-1) ... (I - α H_0) (plus the -∇L_k columns for learned α), H_k the per-task
# Hessian of inner loss k, which is symmetric, so J^T needs nothing but the same Hessian-vector
# products. F v is then: k HVPs forward, one Jacobian-vector and one vector-Jacobian product of the
# query network, k HVPs back. The derivatives are written out per layer (forward tangents, backward
# cotangents, and their forward-over-reverse combination for the HVPs), once linearised at θ_old:
# the activations, activation derivatives and backward cotangents of every inner step are kept, so a
# CG iteration replays only the products that involve its vector (no second derivative of ReLU, no
# autograd graph, no zero tensors for unused second derivatives).
#
# Every product is a sum over rows (samples), so the passes run over row chunks of a few thousand rows
# (one task's rows, or a few whole tasks) and add up per task: a chunk's tangents and cotangents stay in
# cache from one matrix product to the next, where whole-batch passes stream each [rows, width]
# intermediate through memory (the products are then compute-bound; BENCHMARKS.md, "Row chunks"). The
# line search's values are computed in the same chunks.
# ---------------------------------------------------------------------------------------------------


class _MLPSpec:
    """The layers of a Gaussian or categorical MLP policy as the derivative code below needs them."""

    def __init__(self, prefix: str, net: torch.nn.Sequential, gaussian: bool):
        mods = list(net)
        self.gaussian = gaussian
        self.weights = [f"{prefix}{i}.weight" for i in range(0, len(mods), 2)]
        self.biases = [f"{prefix}{i}.bias" for i in range(0, len(mods), 2)]
        self.acts = ["relu" if isinstance(m, torch.nn.ReLU) else "tanh" for m in mods[1::2]]

    @property
    def num_layers(self) -> int:
        return len(self.weights)


def mlp_spec(policy) -> _MLPSpec | None:
    """The spec of ``policy``, or None when it is not an MLP policy of the supported form."""
    from metarl.common.policies import CategoricalMLPPolicy, GaussianMLPPolicy

    # type(), not isinstance: a subclass may override forward or distribution.
    if type(policy) is GaussianMLPPolicy:
        prefix, net, gaussian = "mean_net.", policy.mean_net, True
    elif type(policy) is CategoricalMLPPolicy:
        prefix, net, gaussian = "logits_net.", policy.logits_net, False
    else:
        return None
    if type(net) is not torch.nn.Sequential or len(net) % 2 != 1:
        return None
    for i, m in enumerate(net):
        if i % 2 == 0 and not (type(m) is torch.nn.Linear and m.bias is not None):
            return None
        if i % 2 == 1 and type(m) not in (torch.nn.ReLU, torch.nn.Tanh):
            return None
    spec = _MLPSpec(prefix, net, gaussian)
    expected = spec.weights + spec.biases + (["log_std"] if gaussian else [])
    if sorted(expected) != sorted(n for n, _ in policy.named_parameters()):
        return None
    return spec


def _task_rows(x: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """[T, B, ...] time-major columns (task-major) -> [M, T * B / M, ...], one row block per task."""
    T, B = x.shape[:2]
    rest = x.shape[2:]
    return x.reshape(T, num_tasks, B // num_tasks, *rest).transpose(0, 1).reshape(num_tasks, -1, *rest)


def _outer(delta: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Σ_n delta_n h_n^T per task: [M, out, in]. The bmm is much faster with the narrow operand
    as the left one's rows (a 2-wide input layer: 0.6 ms against 4.5 ms at 40000 rows)."""
    if delta.shape[-1] <= h.shape[-1]:
        return torch.bmm(delta.transpose(1, 2), h)
    return torch.bmm(h.transpose(1, 2), delta).transpose(1, 2)


#: Size of the cross block's row blocks, in floats of Z (below): 4 MB took 0.34 s at the paper's HalfCheetah
#: setting on two threads, 16 MB 0.39 s, and one product per input column over a task's rows 0.50 s
#: (experiments/profile_maml_update.py).
CROSS_BLOCK_FLOATS = 2**20


def row_chunks(num_tasks: int, rows: int, chunk_rows: int | None) -> list[tuple[slice, slice]]:
    """(task slice, row slice) pairs that cover [num_tasks, rows] in pieces of about ``chunk_rows``
    rows: row ranges of one task when a task has more rows than that, else groups of whole tasks.
    None: one piece, everything."""
    if chunk_rows is None or num_tasks * rows <= chunk_rows:
        return [(slice(None), slice(None))]
    if rows >= chunk_rows:
        pieces = math.ceil(rows / chunk_rows)
        size = math.ceil(rows / pieces)  # near-equal pieces: at most two shapes of work buffer
        return [(slice(m, m + 1), slice(i, min(i + size, rows))) for m in range(num_tasks) for i in range(0, rows, size)]
    group = chunk_rows // rows
    return [(slice(m, min(m + group, num_tasks)), slice(None)) for m in range(0, num_tasks, group)]


def _accumulate(total: Params | None, part: Params, tasks: slice, num_tasks: int, whole: bool) -> Params:
    """Add one chunk's per-task sums into ``total`` ([num_tasks, ...] each); ``whole``: the chunk is the only
    one and covers every task and row, so it is the total."""
    if whole:
        return part
    if total is None:
        total = {n: p.new_zeros((num_tasks, *p.shape[1:])) for n, p in part.items()}
    for n, p in part.items():
        total[n][tasks] += p
    return total


class _MLP:
    """One forward pass of per-task MLP parameters (leaves [M, ...]) on per-task rows x [M, n, D].

    Keeps what the tangent and cotangent passes need: layer inputs, activation derivatives, and,
    after :meth:`backward` with ``keep=True``, the cotangents of the pre-activations.

    The row-sized intermediates of the repeated passes (:meth:`jvp`, :meth:`backward` without
    ``keep``, :meth:`hvp_backward`) are written into work buffers that persist between calls:
    freshly allocated 16 MB tensors cost more in page faults than the elementwise work on them
    (a quarter of a Fisher-vector product's time on the navigation config). What such a pass
    returns is therefore only valid until the next pass of the same kind.
    """

    def __init__(self, spec: _MLPSpec, params: Params, x: torch.Tensor, work: dict | None = None):
        """``work``: buffers shared with earlier passes whose results are no longer needed (the
        line search's evaluations); the forward pass then writes into them too."""
        self.spec, self.params = spec, params
        self.inputs = [x]  # input of every layer
        self.d1: list[torch.Tensor] = []  # σ'(z) of every hidden layer
        self.d2: list[torch.Tensor | None] = []  # σ''(z) (tanh only; ReLU's is 0)
        transient = work is not None
        self._work: dict[str, torch.Tensor] = work if transient else {}

        def buffer(key, like):
            return self._buffer(key, like.shape, like) if transient else None

        h = x
        L = spec.num_layers
        for l in range(L):
            z = self._affine(h, params[spec.weights[l]], params[spec.biases[l]], key=f"z{l}" if transient else None)
            if l == L - 1:
                self.out = z
                break
            if spec.acts[l] == "relu":
                h = z.clamp_min_(0)
                self.d1.append(torch.sign(h, out=buffer(f"d1_{l}", h)))  # 1 where z > 0, else 0
                self.d2.append(None)
            else:
                h = z.tanh_()
                d1 = torch.mul(h, h, out=buffer(f"d1_{l}", h)).neg_().add_(1)
                self.d1.append(d1)
                self.d2.append(torch.mul(h, d1, out=buffer(f"d2_{l}", h)).mul_(-2))
            self.inputs.append(h)
        self.deltas: list[torch.Tensor] | None = None
        self.grad_inputs: list[torch.Tensor | None] | None = None
        self.cross: torch.Tensor | None = None
        self.uses_cross = False  # whether hvp_backward leaves the cross-block terms to add_cross_terms

    def _buffer(self, key: str, shape, like: torch.Tensor) -> torch.Tensor:
        # keyed by shape too: row chunks come in two shapes (the last one of a task may be shorter)
        shape = tuple(shape)
        buf = self._work.get((key, shape))
        if buf is None:
            buf = self._work[key, shape] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def chunk(self, tasks: slice, rows: slice) -> "_MLP":
        """The same linearised network restricted to some tasks' rows: views of every kept tensor,
        sharing this network's work buffers. Its :meth:`hvp_backward` leaves the cross-block terms
        out (they are sums over all rows: :meth:`add_cross_terms` adds them once)."""
        part = object.__new__(_MLP)
        part.spec, part._work = self.spec, self._work
        part.params = {n: p[tasks] for n, p in self.params.items()}
        part.inputs = [h[tasks, rows] for h in self.inputs]
        part.d1 = [d[tasks, rows] for d in self.d1]
        part.d2 = [None if d is None else d[tasks, rows] for d in self.d2]
        part.deltas = None if self.deltas is None else [d[tasks, rows] for d in self.deltas]
        part.grad_inputs = None if self.grad_inputs is None else [
            None if g is None else g[tasks, rows] for g in self.grad_inputs]
        part.cross = None
        part.uses_cross = self.cross is not None
        return part

    def _affine(self, h, w, b, key: str | None = None) -> torch.Tensor:
        """h w^T + b per task; bmm then an in-place add (baddbmm's broadcast bias copy costs more)."""
        out = None if key is None else self._buffer(key, (*h.shape[:-1], w.shape[1]), h)
        return torch.bmm(h, w.transpose(1, 2), out=out).add_(b.unsqueeze(1))

    def jvp(self, tangent: Params, keep: bool = False):
        """Output tangent for parameter tangents [M, ...]; with ``keep`` also the hidden tangents."""
        spec, P = self.spec, self.params
        dh = None
        dzs, dhs = [], []
        for l in range(spec.num_layers):
            w = spec.weights[l]
            dz = self._affine(self.inputs[l], tangent[w], tangent[spec.biases[l]], key=f"dz{l}")
            if dh is not None:
                dz.baddbmm_(dh, P[w].transpose(1, 2))
            if l == spec.num_layers - 1:
                return dz, dzs, dhs
            if self.d2[l] is None:  # ReLU: the pre-activation tangent is not needed again
                dh = dz.mul_(self.d1[l])
                dzs.append(None)
            else:
                dh = torch.mul(dz, self.d1[l], out=self._buffer(f"dh{l}", dz.shape, dz))
                dzs.append(dz)
            if keep:
                dhs.append(dh)

    def backward(self, cot: torch.Tensor, keep: bool = False) -> Params:
        """Parameter cotangents [M, ...] for the output cotangent ``cot`` [M, n, out]."""
        spec, P = self.spec, self.params
        L = spec.num_layers
        grads: Params = {}
        deltas, grad_inputs = [None] * L, [None] * L
        delta = cot
        for l in reversed(range(L)):
            w = spec.weights[l]
            grads[w] = _outer(delta, self.inputs[l])
            grads[spec.biases[l]] = delta.sum(1)
            deltas[l] = delta
            if l > 0:
                shape = (*delta.shape[:-1], P[w].shape[2])
                # kept cotangents must outlive later passes: only the others go to work buffers
                gh = torch.bmm(delta, P[w], out=None if keep else self._buffer(f"gh{l}", shape, delta))
                if self.d2[l - 1] is not None:
                    grad_inputs[l] = gh
                    delta = gh * self.d1[l - 1]
                else:
                    delta = gh.mul_(self.d1[l - 1])
        if keep:
            self.deltas, self.grad_inputs = deltas, grad_inputs
        return grads

    def precompute_cross(self) -> None:
        """Precompute the input-layer/second-layer block of the second-order term of the HVPs.

        In :meth:`hvp_backward` two row-sized products, δ_1^T dh_0 (for the second layer's weights)
        and δ_1 dW_1 (back to the first layer's), couple the first two layers through the kept
        cotangent δ_1 and the first layer's tangent dh_0 = σ'_0 ⊙ (x̃ dW̃_0^T), x̃ = [x, 1]. Both
        are contractions of C[i, k, j] = Σ_n δ_1[n, i] σ'_0[n, k] x̃[n, j], built here once with
        (input dim + 1) row-sized products; each HVP then saves two, which pays off for the
        narrow inputs of these tasks (2-D navigation: 3 once against 2 per HVP, 21 HVPs per inner
        step in a TRPO update with 10 CG iterations).
        """
        if self.spec.num_layers < 2 or self.deltas is None:
            return
        x, d1, delta = self.inputs[0], self.d1[0], self.deltas[1]
        M, n, J = x.shape
        H, O = d1.shape[-1], delta.shape[-1]
        # stored [M, hidden_0, out_1, in_0 + 1]: each (task, hidden unit) block is one contiguous matrix, so
        # both contractions in add_cross_terms are batched matrix-vector products
        cross = x.new_empty(M, H, O, J + 1)
        # Built per task and row block: Z[r, j, k] = x̃[r, j] σ'_0[r, k] for a block of rows (cache-sized),
        # then one product Z^T δ_1 [(J + 1) H, O] per block, accumulated
        block = max(1, min(n, CROSS_BLOCK_FLOATS // ((J + 1) * H)))
        z = x.new_empty(block, J + 1, H)
        acc = x.new_empty(J + 1, H, O)
        for m in range(M):
            acc.zero_()
            for i in range(0, n, block):
                r = min(block, n - i)
                zb = z[:r]
                torch.mul(x[m, i : i + r].unsqueeze(-1), d1[m, i : i + r].unsqueeze(1), out=zb[:, :J])
                zb[:, J] = d1[m, i : i + r]
                acc.view((J + 1) * H, O).addmm_(zb.view(r, (J + 1) * H).T, delta[m, i : i + r])
            cross[m] = acc.permute(1, 2, 0)
        self.cross = cross
        self.uses_cross = True

    def add_cross_terms(self, out: Params, tangent: Params) -> None:
        """Add the two cross-block terms of :meth:`hvp_backward` (all tasks, all rows) into ``out``."""
        if self.cross is None:
            return
        spec = self.spec
        M, K, I, J = self.cross.shape
        cross = self.cross.view(M * K, I, J)
        # δ_1^T dh_0 through C: Σ_j C[i, k, j] dW̃_0[k, j] for every (i, k)
        dw0 = torch.cat([tangent[spec.weights[0]], tangent[spec.biases[0]].unsqueeze(-1)], -1)  # [M, K, J]
        out[spec.weights[1]] += torch.bmm(cross, dw0.reshape(M * K, J, 1)).view(M, K, I).transpose(1, 2)
        # δ_1 dW_1 back to the first layer through C: Σ_i dW_1[i, k] C[i, k, j] for every (k, j)
        dw1 = tangent[spec.weights[1]].transpose(1, 2).reshape(M * K, 1, I)
        c0 = torch.bmm(dw1, cross).view(M, K, J)
        out[spec.weights[0]] += c0[..., :-1]
        out[spec.biases[0]] += c0[..., -1]

    def hvp_backward(self, dcot: torch.Tensor, tangent: Params, dzs, dhs) -> Params:
        """Tangent of :meth:`backward` (kept cotangents) along ``tangent``, given the output-cotangent
        tangent ``dcot`` and the hidden tangents of :meth:`jvp`: forward-over-reverse, by hand.
        With the cross block (:attr:`uses_cross`) its two terms are left out: :meth:`add_cross_terms`."""
        spec, P = self.spec, self.params
        out: Params = {}
        dd = dcot
        cross = self.uses_cross
        for l in reversed(range(spec.num_layers)):
            w = spec.weights[l]
            gw = _outer(dd, self.inputs[l])
            gb = dd.sum(1)
            if l > 0 and not (l == 1 and cross):
                gw = gw + _outer(self.deltas[l], dhs[l - 1])
            out[w] = gw
            out[spec.biases[l]] = gb
            if l > 0:
                g = torch.bmm(dd, P[w], out=self._buffer(f"hg{l}", (*dd.shape[:-1], P[w].shape[2]), dd))
                if not (l == 1 and cross):
                    g.baddbmm_(self.deltas[l], tangent[w])
                g.mul_(self.d1[l - 1])
                if self.d2[l - 1] is not None:
                    tmp = torch.mul(self.d2[l - 1], dzs[l - 1], out=self._buffer(f"ht{l}", g.shape, g))
                    g.addcmul_(tmp, self.grad_inputs[l])
                dd = g
        return out


class _InnerStep:
    """Inner loss k at per-task parameters: its per-task gradient and (kept) Hessian-vector products.

    L_i = -Σ_n A_n log π(a_n | x_n) / den_i, exactly :meth:`MAML.inner_loss`; with c_n = A_n / den_i
    and ℓ = -log π it is Σ_n c_n ℓ(o_n), and the output-space derivatives of ℓ are written out.
    """

    def __init__(
        self, spec: _MLPSpec, params: Params, data: InnerData, num_tasks: int, keep: bool, cross: bool = False,
        work: dict | None = None, chunk_rows: int | None = None,
    ):
        """``keep``: keep what the Hessian-vector products need (else only :attr:`grad` is computed, in
        row chunks through the work buffers). ``chunk_rows``: row-chunk size of both (None: all rows at once)."""
        batch = data.batch
        valid = batch.valid
        T, B = valid.shape
        den = valid.reshape(T, num_tasks, B // num_tasks).sum((0, 2)).clamp_min(1.0)
        c = (_task_rows(data.advantages, num_tasks) / den.unsqueeze(1)).unsqueeze(-1)  # [M, n, 1]
        self.spec, self.num_tasks = spec, num_tasks
        x, actions = _task_rows(batch.obs, num_tasks), _task_rows(batch.actions, num_tasks)
        self.chunks = row_chunks(num_tasks, x.shape[1], chunk_rows)
        if not keep:
            # values only (the line search): each chunk's forward and backward pass stays in cache
            self.net, grad, whole = None, None, len(self.chunks) == 1
            for tasks, rows in self.chunks:
                p = {n: t[tasks] for n, t in params.items()}
                net = _MLP(spec, p, x[tasks, rows], work=work)
                outs = self._output_grads(p, net.out, actions[tasks, rows], c[tasks, rows], keep=False)
                part = net.backward(outs["out"])
                if spec.gaussian:
                    part["log_std"] = outs["log_std"]
                grad = _accumulate(grad, part, tasks, num_tasks, whole)
            self.grad = grad
            return
        self.net = _MLP(spec, params, x, work=work)
        out = self._output_grads(params, self.net.out, actions, c, keep=True)
        self.grad = self.net.backward(out["out"], keep=True)
        if cross:
            self.net.precompute_cross()
        if spec.gaussian:
            self.grad["log_std"] = out["log_std"]

    def _output_grads(self, params: Params, o, actions, c, keep: bool) -> dict:
        """Derivatives of the inner loss in output space: "out" the cotangent of the network's output
        o, "log_std" the per-task gradient of the log-std (Gaussian); with ``keep`` also the output-space
        second derivatives the Hessian-vector products need."""
        if self.spec.gaussian:
            e2 = torch.exp(-2 * params["log_std"]).unsqueeze(1)  # [M, 1, A]
            r = actions - o
            cr_e2 = c * r * e2
            if keep:
                self.l_oo, self.l_os, self.l_ss = c * e2, 2 * cr_e2, 2 * cr_e2 * r
            return {"out": -cr_e2, "log_std": (c - cr_e2 * r).sum(1)}
        p = torch.softmax(o, -1)
        onehot = torch.nn.functional.one_hot(actions.long(), o.shape[-1]).to(o.dtype)
        if keep:
            self.c, self.p = c, p
        return {"out": c * (p - onehot)}

    def hvp(self, tangent: Params) -> Params:
        """H tangent per task, accumulated over row chunks (each chunk's tangent and cotangent passes
        stay in cache between their matrix products)."""
        whole = len(self.chunks) == 1
        out = None
        for tasks, rows in self.chunks:
            net = self.net.chunk(tasks, rows)
            tan = {n: t[tasks] for n, t in tangent.items()}
            do, dzs, dhs = net.jvp(tan, keep=True)
            if self.spec.gaussian:
                ds = tan["log_std"].unsqueeze(1)
                l_oo, l_os, l_ss = (t[tasks, rows] for t in (self.l_oo, self.l_os, self.l_ss))
                dcot = l_oo * do + l_os * ds
                part = net.hvp_backward(dcot, tan, dzs, dhs)
                part["log_std"] = (l_os * do + l_ss * ds).sum(1)
            else:
                p, c = self.p[tasks, rows], self.c[tasks, rows]
                pdo = p * do
                part = net.hvp_backward(c * (pdo - p * pdo.sum(-1, keepdim=True)), tan, dzs, dhs)
            out = _accumulate(out, part, tasks, self.num_tasks, whole)
        self.net.add_cross_terms(out, tangent)
        return out


class _Query:
    """Post-update policies on the query episodes: surrogate, KL against the old outputs, and the
    output-space quantities of the Gauss-Newton product."""

    def __init__(self, spec: _MLPSpec, params: Params, query: InnerData, num_tasks: int, old=None, work=None,
                 chunk_rows: int | None = None):
        """``old``: the outputs at the linearisation point, for the KL (None: this is that point; keep what
        the Gauss-Newton products need). ``chunk_rows``: row-chunk size of the products, and of the
        forward passes when ``old`` is given (values only)."""
        batch = query.batch
        valid = batch.valid
        T, B = valid.shape
        den = valid.reshape(T, num_tasks, B // num_tasks).sum((0, 2)).clamp_min(1.0).unsqueeze(1)
        self.spec, self.params, self.num_tasks = spec, params, num_tasks
        x, actions = _task_rows(batch.obs, num_tasks), _task_rows(batch.actions, num_tasks)
        log_probs = _task_rows(batch.log_probs, num_tasks)
        adv_w = _task_rows(query.advantages, num_tasks) / den  # surrogate weight of every row
        kl_w = _task_rows(valid, num_tasks) / den  # KL weight of every row (before the 1/M)
        self.chunks = row_chunks(num_tasks, x.shape[1], chunk_rows)
        if old is not None:
            # values only (the line search): surrogate and KL summed per task over row chunks
            self.net, whole = None, len(self.chunks) == 1
            sums = None
            for tasks, rows in self.chunks:
                p = {n: t[tasks] for n, t in params.items()}
                o = _MLP(spec, p, x[tasks, rows], work=work).out
                logp, outputs = self._log_prob(p, o, actions[tasks, rows])
                ratio = torch.exp(logp - log_probs[tasks, rows])
                if spec.gaussian:
                    o, s = outputs
                    mu_old, s_old = old[0][tasks, rows], old[1][tasks]
                    kl = 0.5 * (torch.exp(2 * (s_old - s)) + ((mu_old - o) * torch.exp(-s)).pow(2) - 1.0 - 2 * (s_old - s))
                else:
                    old_rows = old[tasks, rows]
                    kl = old_rows.exp() * (old_rows - outputs)
                part = {"loss": (ratio * adv_w[tasks, rows]).sum(1), "kl": (kl.sum(-1) * kl_w[tasks, rows]).sum(1)}
                sums = _accumulate(sums, part, tasks, num_tasks, whole)
            self.loss, self.kl = -sums["loss"].mean(), sums["kl"].mean()
            return
        self.net = _MLP(spec, params, x, work=work)
        o = self.net.out
        logp, self.outputs = self._log_prob(params, o, actions)
        if spec.gaussian:
            s = self.outputs[1]
            e2 = torch.exp(-2 * s)
            r = actions - o
        else:
            logits = self.outputs
        ratio = torch.exp(logp - log_probs)
        self.loss = -(ratio * adv_w).sum(1).mean()
        # linearisation point: the KL is 0 and its output-space Hessian is needed
        self.kl = torch.zeros((), dtype=o.dtype, device=o.device)
        coef = (-ratio * adv_w / num_tasks).unsqueeze(-1)  # d loss / d log π per row
        self.kl_w = (kl_w / num_tasks).unsqueeze(-1)
        if spec.gaussian:
            # d log π / dμ = r / σ², d log π / d log σ = r² / σ² - 1
            self.loss_cot = coef * r * e2
            self.loss_cot_s = (coef * (r * r * e2 - 1)).sum(1)
            self.e2 = e2
            self.kl_w_sum = self.kl_w.sum(1)  # [M, 1]
        else:
            p = logits.exp()
            onehot = torch.nn.functional.one_hot(actions.long(), o.shape[-1]).to(o.dtype)
            self.loss_cot = coef * (onehot - p)
            self.p = p

    def _log_prob(self, params: Params, o, actions):
        """log π(a | x) per row and the distribution's outputs ((mean, log-std [M, 1, A]) or log-softmax)."""
        if self.spec.gaussian:
            s = params["log_std"].unsqueeze(1)
            z = (actions - o) * torch.exp(-s)
            return (-0.5 * z.pow(2) - s - 0.5 * math.log(2 * math.pi)).sum(-1), (o, s)
        logits = o - o.logsumexp(-1, keepdim=True)
        return logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1), logits

    def loss_vjp(self) -> Params:
        """Per-task parameter cotangents of the surrogate."""
        out = self.net.backward(self.loss_cot)
        if self.spec.gaussian:
            out["log_std"] = self.loss_cot_s
        return out

    def gauss_newton(self, tangent: Params) -> Params:
        """J_q^T K J_q tangent per task (K: Hessian of the mean KL in output space at the old point),
        accumulated over row chunks."""
        whole = len(self.chunks) == 1
        out = None
        for tasks, rows in self.chunks:
            net = self.net.chunk(tasks, rows)
            tan = {n: t[tasks] for n, t in tangent.items()}
            do, _, _ = net.jvp(tan)
            kl_w = self.kl_w[tasks, rows]
            if self.spec.gaussian:
                part = net.backward(kl_w * self.e2[tasks] * do)
            else:
                p = self.p[tasks, rows]
                pdo = p * do
                part = net.backward(kl_w * (pdo - p * pdo.sum(-1, keepdim=True)))
            out = _accumulate(out, part, tasks, self.num_tasks, whole)
        if self.spec.gaussian:
            out["log_std"] = 2 * tangent["log_std"] * self.kl_w_sum
        return out


#: Rows per chunk and torch thread of the Fisher-vector products' passes: a [4096, 100] float32 tensor is
#: 1.6 MB, so a chunk's tangents and cotangents stay in cache between its matrix products instead of
#: streaming through memory. Measured best on the paper's HalfCheetah setting (40 tasks x 4000 rows, 2x100):
#: 2048-4096 rows on one thread, 4096-8192 on two (BENCHMARKS.md, "Row chunks").
FVP_CHUNK_ROWS_PER_THREAD = 4096


def default_chunk_rows(device: torch.device | str = "cpu") -> int | None:
    """Rows per chunk for the products on ``device``: on a GPU none (whole batches): its kernels are
    launched one by one, so chunks would multiply the launches, and its memory bandwidth is not the limit
    here that a CPU's is."""
    if torch.device(device).type != "cpu":
        return None
    return FVP_CHUNK_ROWS_PER_THREAD * torch.get_num_threads()


class OuterLinearization:
    """The outer TRPO objective linearised at the current θ (the old policy), without autograd.

    ``loss`` and ``grad`` are the surrogate and its flat gradient with respect to
    :meth:`MAML.meta_parameters`; :meth:`fvp` is the exact Hessian of the mean KL through the
    adaptation at this point, in Gauss-Newton form; :meth:`evaluate` gives the surrogate and the KL
    against this point at the current values of θ (the line search moves θ in place).

    Cost per product, in row-sized matrix products (rows x width², the bulk of the time): 4 for the
    query network's Jacobian and its transpose, 4 per HVP (6 without :meth:`_MLP.precompute_cross`),
    2 HVPs per inner step; nothing is recomputed between CG iterations. They run over row chunks
    (``chunk_rows``), so they are bound by arithmetic rather than memory.
    """

    def __init__(
        self,
        algo,
        spec: _MLPSpec,
        inner: Sequence[InnerData],
        query: InnerData,
        num_tasks: int,
        products: int = 10,
        cross: bool | None = None,
        chunk_rows: int | None | str = "auto",
    ):
        """``algo``: the MAML instance being updated. ``products``: how many Fisher-vector products will follow; with ``cross`` None it decides
        whether :meth:`_MLP.precompute_cross` pays off (True/False force it on/off). ``chunk_rows``: rows per
        chunk of the products' passes ("auto": :func:`default_chunk_rows`; None: whole batches; the results
        agree to rounding)."""
        self.algo, self.spec, self.inner, self.query, self.num_tasks = algo, spec, list(inner), query, num_tasks
        if chunk_rows == "auto":
            chunk_rows = default_chunk_rows(next(algo.policy.parameters()).device)
        self.chunk_rows = chunk_rows
        self.first_order = algo.cfg.first_order
        if cross is None:
            # (input dim + 1) row-sized products once against 2 saved per HVP, 2 HVPs per
            # product and inner step plus one for the gradient
            in_dim = algo.policy.params()[spec.weights[0]].shape[1]
            cross = in_dim + 1 < 2 * (2 * products + 1)
        self.cross = cross and not self.first_order
        # row-sized buffers of the line search's evaluations (inner steps, query), kept between them
        self._eval_work: tuple[dict, dict] = ({}, {})
        self.names = [n for n, _ in algo.policy.named_parameters()]
        self.learned_lr = algo.inner_lrs is not None
        # The flat vectors follow MAML.meta_parameters(): θ, then the learned learning rates in the
        # ParameterDict's own (sorted) order.
        self.lr_order = []
        if self.learned_lr:
            by_id = {id(algo.inner_lrs[n.replace(".", "__")]): n for n in self.names}
            self.lr_order = [by_id[id(p)] for p in algo.inner_lrs.parameters()]
        with torch.no_grad():
            self.steps, params = self._adapt(keep=not self.first_order)
            self.qry = _Query(spec, params, query, num_tasks, chunk_rows=chunk_rows)
            self.old = tuple(t.detach() for t in self.qry.outputs) if spec.gaussian else self.qry.outputs.detach()
            self.loss, self.kl = self.qry.loss, self.qry.kl
            self.grad = self._pullback(self.qry.loss_vjp())

    def _lrs(self) -> dict:
        return {n: self.algo._lr(n, None) for n in self.names}

    def _adapt(self, keep: bool, work: dict | None = None):
        M = self.num_tasks
        theta = self.algo.policy.params()
        params = {n: theta[n].detach().unsqueeze(0).expand(M, *theta[n].shape).contiguous() for n in self.names}
        lrs = self._lrs()
        steps = []
        for data in self.inner:
            step = _InnerStep(self.spec, params, data, M, keep, cross=keep and self.cross, work=work,
                              chunk_rows=self.chunk_rows)
            params = {n: params[n] - _detached(lrs[n]) * step.grad[n] for n in self.names}
            steps.append(step)
            if not keep:
                step.net = None  # only the gradient is needed: free the activations
        return steps, params

    def evaluate(self):
        """Surrogate and mean KL(old || new) at the current θ (values, no graph)."""
        with torch.no_grad():
            _, params = self._adapt(keep=False, work=self._eval_work[0])
            q = _Query(self.spec, params, self.query, self.num_tasks, old=self.old, work=self._eval_work[1],
                       chunk_rows=self.chunk_rows)
        return q.loss, q.kl

    def _pullback(self, cot: Params) -> torch.Tensor:
        """Flat cotangent of the meta-parameters for per-task cotangents of the adapted parameters."""
        lrs = self._lrs()
        theta = self.algo.policy.params()
        lr_cot = {n: torch.zeros_like(theta[n]) for n in self.names} if self.learned_lr else {}
        for step in reversed(self.steps):
            if self.learned_lr:
                # d θ_{k+1} / d α = -∇L_k(θ_k)
                for n in self.names:
                    lr_cot[n] = lr_cot[n] - (step.grad[n] * cot[n]).sum(0)
            if not self.first_order:
                # (I - α H_k)^T c = c - H_k (α c): H_k is symmetric
                h = step.hvp({n: _detached(lrs[n]) * cot[n] for n in self.names})
                cot = {n: cot[n] - h[n] for n in self.names}
        flat = [cot[n].sum(0) for n in self.names]
        if self.learned_lr:
            flat += [lr_cot[n] for n in self.lr_order]
        return flatten(flat)

    def _pushforward(self, v: torch.Tensor) -> Params:
        """Per-task tangent of the adapted parameters for a flat tangent of the meta-parameters."""
        M = self.num_tasks
        theta = self.algo.policy.params()
        shapes = [theta[n] for n in self.names]
        parts = unflatten_like(v, shapes + [theta[n] for n in self.lr_order])
        tan = {n: parts[i].unsqueeze(0).expand(M, *shapes[i].shape).contiguous() for i, n in enumerate(self.names)}
        dlr = {n: parts[len(shapes) + i] for i, n in enumerate(self.lr_order)} if self.learned_lr else None
        lrs = self._lrs()
        for step in self.steps:
            new = tan
            if not self.first_order:
                h = step.hvp(tan)
                new = {n: tan[n] - _detached(lrs[n]) * h[n] for n in self.names}
            if dlr is not None:
                new = {n: new[n] - dlr[n] * step.grad[n] for n in self.names}
            tan = new
        return tan

    def fvp(self, v: torch.Tensor) -> torch.Tensor:
        """F v, F the Hessian of the mean KL with respect to the meta-parameters at this point."""
        with torch.no_grad():
            return self._pullback(self.qry.gauss_newton(self._pushforward(v.detach())))


def _detached(x):
    return x.detach() if isinstance(x, torch.Tensor) else x
